"""The quality benchmark's paired statistics, against values computed by hand."""

import math

import pytest

from benchmarks.quality import paired, table


def test_paired_differences_and_one_sided_p_values():
    student = [0.50, 0.52, 0.54, 0.56, 0.58]
    control = [0.49, 0.50, 0.51, 0.52, 0.53]  # differences 0.01 .. 0.05
    s = paired(student, control)
    assert s["mean"] == pytest.approx(0.03)
    assert s["sd"] == pytest.approx(math.sqrt(0.00025))  # sample SD of 0.01..0.05
    assert s["wins"] == 5 and s["n"] == 5
    # t = 0.03 / (0.015811 / sqrt 5) = 4.2426 with 4 degrees of freedom: one-sided p = 0.00659
    assert s["t_p"] == pytest.approx(0.00659, abs=5e-5)
    # all five signed ranks positive: exact one-sided Wilcoxon p = 1 / 2**5
    assert s["wilcoxon_p"] == pytest.approx(1 / 32)


def test_paired_worse_student_gets_a_large_p_and_no_wins():
    s = paired([0.4, 0.41, 0.39], [0.5, 0.5, 0.5])
    assert s["wins"] == 0 and s["mean"] == pytest.approx(-0.1)
    assert s["t_p"] > 0.99 and s["wilcoxon_p"] == pytest.approx(1.0)


def test_paired_without_spread_has_no_p_value():
    s = paired([0.2, 0.2], [0.2, 0.2])
    assert s["mean"] == 0 and s["wins"] == 0
    assert math.isnan(s["t_p"]) and math.isnan(s["wilcoxon_p"])


def test_table_lists_every_seed_and_comparison():
    rows = [
        {
            "seed": seed,
            "metric": "mIoU",
            "teacher": 0.5,
            "students": {"st": 0.5 + d, "st++": 0.5 + 2 * d},
            "controls": {"st": 0.5, "st++": 0.5},
            "iters": {"teacher": 324, "st": 1944, "st++": 1944},
        }
        for seed, d in ((0, 0.01), (1, 0.02))
    ]
    text = table(rows, "segmentation", ["st", "st++"])
    assert "| 0 | 0.5000 | 0.5100 | 0.5000 | 0.5200 | 0.5000 |" in text
    assert "| st++ - st | +0.0150 | 0.0071 | 2/2 |" in text
    assert "teacher 324 it" in text and "st student and its control 1944 it" in text


def test_table_reports_the_alpha_experiment_and_a_failed_training():
    rows = [
        {
            "seed": seed,
            "metric": "bbox_mAP",
            "teacher": 0.07,
            "students": {"zoph": 0.08},
            "controls": {"zoph": 0.075},
            "iters": {"teacher": 900, "zoph": 900},
            "alpha4": {"normalised": {"value": 0.08, "error": None}, "plain": plain},
        }
        for seed, plain in ((0, {"value": 0.06, "error": None}), (1, {"value": None, "error": "RuntimeError: nan"}))
    ]
    text = table(rows, "detection", ["zoph"])
    assert "| 0 | 0.0800 | 0.0600 |" in text
    assert "| 1 | 0.0800 | failed: RuntimeError: nan |" in text
    assert "normalised - plain: +0.0200" in text and "1/1 seeds" in text  # only seeds where both trained


def test_each_seed_runs_the_demo_with_every_option_it_has():
    """The benchmark starts from the demo's own defaults: an option added to the demo (as the
    threshold rule was) cannot be missing from the arguments the benchmark builds."""
    from app import demo
    from benchmarks.quality import demo_arguments

    ns = demo_arguments(60, None, 3, ["st", "st++"])
    assert (ns.teacher_iters, ns.student_iters, ns.seed, ns.methods) == (60, None, 3, ["st", "st++"])
    params = demo._overrides(ns, demo.SEG_DEMO_PARAMS)
    assert params["seed"] == 3 and params["teacher_iters"] == 60 and "threshold_rule" not in params
