# Every training's schedule: iteration-based, linear warm-up (the model config's warmup_iters,
# at most half the schedule; no warm-up stage when 0), then cosine decay to 5% of the learning
# rate. `None`: filled per run from the iterations and the warm-up. The optimiser is the model
# config's (optim_wrapper).
train_cfg = dict(type="IterBasedTrainLoop", max_iters=None, val_interval=None)  # validation at each checkpoint
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=None),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=None, end=None, eta_min_ratio=0.05),
]
