"""The one config builder: OpenMMLab configs for every stage, from the files of model_configs/.

A model config (model_configs/det|seg/*.py) holds the model, its input size, batch size and
optimiser. A stage config (model_configs/stages/, with its ``_base_`` runtime, schedule,
dataset and student-wrapper files) holds the rest of a stage's recipe, its pipelines come
from model_configs/pipelines/, its augmentation from model_configs/aug/ and its TTA views
from model_configs/tta/. The modules here only put a run's values (paths, classes, sizes,
the checkpoint interval) into those templates and return plain mmengine ``Config`` objects
for mmengine's Runner; nothing here trains or infers.

- files: finding, loading and digesting the recipe files (store keys)
- models: model dicts sized for the registered classes
- pipelines: pipeline templates filled
- recipes: the papers' size rules (oversampling, epoch-matched schedules, batches)
- datasets: a registered set's local copy in a dataset dict
- training: the schedule, K checkpoints, validation and the Zoph et al. wrapper
- detection / segmentation: each task's stage configs
"""

from selftrain.mm.configs.datasets import CocoSource, SegSource, coco_dataset, count_images, seg_dataset
from selftrain.mm.configs.detection import det_test_config, det_train_config, det_tta_model
from selftrain.mm.configs.files import (
    AUG_PRESETS,
    NO_STRONG,
    STRONG,
    WEAK,
    ConfigError,
    aug_preset,
    config_digest,
    load_config,
    pipelines_file,
    recipe_digest,
    resolve_config_path,
    stage_names,
    stage_template,
    strong_names,
    strong_transforms,
    training_stage,
    tta_defaults,
)
from selftrain.mm.configs.models import build_model, det_model, seg_model, set_num_classes
from selftrain.mm.configs.pipelines import (
    det_test_pipeline,
    det_train_pipeline,
    det_tta_pipeline,
    mmdet_scoped,
    seg_test_pipeline,
    seg_train_pipeline,
    seg_tta_pipeline,
)
from selftrain.mm.configs.recipes import epoch_matched_iters, oversample_times, teacher_set_size, zoph_batch_size
from selftrain.mm.configs.segmentation import seg_test_config, seg_train_config, seg_tta_model

__all__ = [
    "AUG_PRESETS",
    "NO_STRONG",
    "STRONG",
    "WEAK",
    "CocoSource",
    "ConfigError",
    "SegSource",
    "aug_preset",
    "build_model",
    "coco_dataset",
    "config_digest",
    "count_images",
    "det_model",
    "det_test_config",
    "det_test_pipeline",
    "det_train_config",
    "det_train_pipeline",
    "det_tta_model",
    "det_tta_pipeline",
    "epoch_matched_iters",
    "load_config",
    "mmdet_scoped",
    "oversample_times",
    "pipelines_file",
    "recipe_digest",
    "resolve_config_path",
    "seg_dataset",
    "seg_model",
    "seg_test_config",
    "seg_test_pipeline",
    "seg_train_config",
    "seg_train_pipeline",
    "seg_tta_model",
    "seg_tta_pipeline",
    "set_num_classes",
    "stage_names",
    "stage_template",
    "strong_names",
    "strong_transforms",
    "teacher_set_size",
    "training_stage",
    "tta_defaults",
    "zoph_batch_size",
]
