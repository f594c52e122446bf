# Zoph et al. 2020's student for segmentation (§4.2, Appendix B): the loss of the human and pseudo
# halves of a batch, L = 1/(1+a) * (Lh + a * EMA(Lh)/EMA(Lp) * Lp), around any mmseg segmentor
# (selftrain/mm/segmentation.py). `None`: filled per run - the model config's segmentor (heads
# sized for the registered classes), its data preprocessor, and alpha (flow parameter).
model = dict(
    type="LossNormalizedSegmentor",
    detector=None,
    alpha=None,
    data_preprocessor=dict(type="mmdet.DropEmptyBranchesDataPreprocessor", data_preprocessor=None),
)
