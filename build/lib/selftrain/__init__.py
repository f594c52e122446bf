"""selftrain: self-training pipelines for detection and segmentation (Prefect + OpenMMLab)."""

__version__ = "0.1.0"
