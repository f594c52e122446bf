# The runtime of an evaluation (Runner.test()) on a held-out set.
custom_imports = dict(imports=["selftrain.mm"], allow_failed_imports=False)
work_dir = None
default_hooks = dict(timer=dict(type="IterTimerHook"), logger=dict(type="LoggerHook", interval=50))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend="nccl"))
log_level = "WARNING"
test_cfg = dict(type="TestLoop")
