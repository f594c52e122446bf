"""Datasets prepared at set-up time (never committed): real benchmarks written as COCO files."""
