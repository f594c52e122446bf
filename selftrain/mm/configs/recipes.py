"""The papers' size rules for a student: oversampling, epoch-matched schedules, batch sizes.

Pure arithmetic, no config files; each rule cites its source.
"""

from __future__ import annotations

import math

from selftrain.mm.configs.files import ConfigError


def oversample_times(num_labeled: int, num_pseudo: int) -> int:
    """ST: the labeled set is repeated ceil(P / L) times beside the P pseudo-labeled images, as
    the ST++ reference code does (dataset/semi.py: ``labeled_ids * math.ceil(len(unlabeled_ids)
    / len(labeled_ids))``; docs/design.md §3.5). At least once. Raises ConfigError for L = 0."""
    if num_labeled <= 0:
        raise ConfigError("the labeled set is empty")
    return max(1, math.ceil(num_pseudo / num_labeled))


def teacher_set_size(num_labeled: int) -> int:
    """The images of a teacher's epoch: the labeled set, twice when it has fewer than 200
    images (the ST++ reference's rule, main.py)."""
    return 2 * num_labeled if num_labeled < 200 else num_labeled


def epoch_matched_iters(teacher_iters: int, num_labeled: int, num_pseudo: int, k: int) -> int:
    """An ST / ST++ student's iterations: as many epochs over its own training set as the
    teacher trained over the labeled set, at the same batch size (the ST++ reference code
    trains every stage for the same ``--epochs``, main.py).

    The teacher's epochs are ``teacher_iters * B / L_t``, where ``L_t`` is the teacher's set:
    the L labeled images, doubled when L < 200 as the reference does (main.py:
    ``trainset.ids = 2 * trainset.ids if len(trainset.ids) < 200``); the student's set holds
    ``ceil(P / L) * L + P`` images (:func:`oversample_times`), so its iterations are
    ``teacher_iters * (ceil(P / L) * L + P) / L_t``, rounded up to a multiple of ``k`` (the K
    checkpoints stay evenly spaced). E.g. 300 teacher iterations, 16 labeled, 96 pseudo:
    300 * (6 * 16 + 96) / 32 = 1800. Raises ConfigError for an empty labeled set or
    non-positive iterations / k."""
    if teacher_iters <= 0 or k <= 0:
        raise ConfigError(f"teacher_iters ({teacher_iters}) and k ({k}) must be positive")
    size = oversample_times(num_labeled, num_pseudo) * num_labeled + num_pseudo
    return math.ceil(teacher_iters * size / teacher_set_size(num_labeled) / k) * k


def zoph_batch_size(batch: int, zoph_batch: str) -> int:
    """A Zoph et al. student's batch from the model config's B: 'double' (the paper, §3.2: B human
    + B pseudo images) or 'split' (B/2 + B/2; B must be even). Raises ConfigError otherwise."""
    if zoph_batch not in ("double", "split"):
        raise ConfigError(f"zoph_batch must be 'double' or 'split', got {zoph_batch!r}")
    if zoph_batch == "split" and batch % 2:
        raise ConfigError(f"the student's batch size ({batch}) must be even: half human, half pseudo")
    return 2 * batch if zoph_batch == "double" else batch
