# The runtime of every training (mmengine Runner): hooks, environment, logging, seeding.
# Stage configs (model_configs/stages/) inherit it. `None` marks what selftrain fills per run
# (selftrain/mm/configs/): the checkpoint interval (iters / K: the K evenly spaced checkpoints
# iter_{j*iters/K}.pth, docs/design.md §2.3), the logging interval, the seed, the work folder.
custom_imports = dict(imports=["selftrain.mm"], allow_failed_imports=False)
work_dir = None
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=None),  # min(50, checkpoint interval / 2)
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", interval=None, by_epoch=False, max_keep_ckpts=-1, save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
log_processor = dict(type="LogProcessor", window_size=20, by_epoch=False)
log_level = "INFO"
load_from = None  # a student initialised from its teacher: the teacher's checkpoint
resume = False
randomness = dict(seed=None, deterministic=False)
