"""Every Python example of the README runs: its parameters are built and validated for real
(config lookup included), and the flow call binds exactly as `run` binds it. The examples'
data live on the user's bucket, so the flow itself runs in the integration tests on local
data (tests/integration/test_users_data_flow.py)."""

from __future__ import annotations

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")
RUN_LINE = re.compile(r"^(\w+)\s*=\s*run\((\w+)\)\s*(#.*)?$")


def python_examples() -> list[str]:
    text = open(README).read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_has_python_examples():
    assert len(python_examples()) >= 2


@pytest.mark.parametrize("index", range(len(python_examples())))
def test_readme_python_example_runs(index):
    from prefect.exceptions import ParameterBindError
    from prefect.utilities.callables import get_call_parameters

    from flows.self_training import SelfTrainingParams, self_training

    code = python_examples()[index]
    body, calls = [], []
    for line in code.splitlines():
        m = RUN_LINE.match(line.strip())
        if m:
            calls.append(m.group(2))
        else:
            body.append(line)
    namespace: dict = {}
    exec(compile("\n".join(body), f"README.md python example {index + 1}", "exec"), namespace)  # noqa: S102
    assert calls, "each example ends by running the flow: `report_uri = run(params)`"
    for name in calls:
        params = namespace[name]
        assert isinstance(params, SelfTrainingParams)
        # What `run` does: the flow is called with the parameters as keyword fields.
        bound = get_call_parameters(self_training.fn, (), params.model_dump(mode="json"))
        assert SelfTrainingParams(**bound) == params
    # The form an earlier README showed, the flow called with the parameter object, cannot bind.
    with pytest.raises(ParameterBindError):
        get_call_parameters(self_training.fn, (params,), {})
