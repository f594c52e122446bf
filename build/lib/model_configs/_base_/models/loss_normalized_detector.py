# Zoph et al. 2020's student (Appendix B): the loss of the human and pseudo halves of a batch,
# L = 1/(1+a) * (Lh + a * EMA(Lh)/EMA(Lp) * Lp), around any mmdet detector
# (selftrain/mm/loss_normalization.py). `None`: filled per run - the model config's detector
# (heads sized for the registered classes), its data preprocessor, and alpha (flow parameter).
model = dict(
    type="LossNormalizedDetector",
    detector=None,
    alpha=None,
    data_preprocessor=dict(type="DropEmptyBranchesDataPreprocessor", data_preprocessor=None),
)
