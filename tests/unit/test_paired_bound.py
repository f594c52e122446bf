"""The throughput benchmark's paired measurement: every batch of the pipeline run twice, the
timed twin first on every other batch (benchmarks/throughput.py PairedBound)."""

from benchmarks.throughput import PairedBound


class Recorder:
    """A stand-in with the one method the inference loop calls on a model."""

    def __init__(self):
        self.calls: list[str] = []

    def test_step(self, batch):
        self.calls.append(batch)
        return [f"prediction of {batch}"]


def test_each_batch_runs_twice_the_timed_twin_alternating_first_and_the_caller_gets_its_own_output():
    model = Recorder()
    twin = PairedBound(model)
    times = []
    for batch in ("a", "b", "c"):
        before = twin.bound_s
        assert twin.test_step(batch) == [f"prediction of {batch}"]
        times.append(twin.bound_s - before)
    assert model.calls == ["a", "a", "b", "b", "c", "c"]
    assert twin.batches == 3
    assert all(t > 0 for t in times)  # each batch's twin was timed once
    # the order alternates: caller-then-twin, twin-then-caller, caller-then-twin; shown by
    # timing a twin that records a marker (the timed run is the one inside _timed)
    order = []
    twin = PairedBound(model)
    twin._timed = lambda batch: order.append(("timed", batch))  # type: ignore[method-assign]
    model.test_step = lambda batch: order.append(("caller", batch)) or []  # type: ignore[method-assign]
    for batch in ("a", "b", "c"):
        twin.test_step(batch)
    assert order == [("caller", "a"), ("timed", "a"), ("timed", "b"), ("caller", "b"), ("caller", "c"), ("timed", "c")]
