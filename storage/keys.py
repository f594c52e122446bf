"""Content-addressed artifact keys (docs/design.md §4.2).

key = sha256(canonical JSON of {stage, stage_version, config_digest, inputs, params}),
truncated to 32 hex characters (128 bits). The same logical inputs always give the same
key, on any machine and in any process; any change to one of them gives a new key. Keys
never contain clocks, metrics or run ids: only what determines the stage's output.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

KEY_LENGTH = 32
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_KEY = re.compile(rf"^[0-9a-f]{{{KEY_LENGTH}}}$")


class KeyMaterialError(ValueError):
    """A value cannot take part in a key (not JSON, NaN, non-string dict key ...)."""


def _normalise(value: Any, where: str) -> Any:
    # pydantic models and dataclass-like objects become plain JSON data first.
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return _normalise(value.model_dump(mode="json"), where)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return _normalise(value.value, where)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KeyMaterialError(f"{where}: {value!r} is not a finite number and cannot be part of a key")
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise KeyMaterialError(f"{where}: mapping key {k!r} is not a string")
            out[k] = _normalise(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_normalise(v, f"{where}{{}}") for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    # numpy scalars
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return _normalise(value.item(), where)
    raise KeyMaterialError(f"{where}: {type(value).__name__} is not JSON data and cannot be part of a key")


def canonical_json(value: Any) -> str:
    """One byte-exact JSON text per logical value: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        _normalise(value, "$"), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_json(value: Any) -> str:
    """Digest of a JSON-able value, e.g. a resolved OpenMMLab config dict."""
    return digest_bytes(canonical_json(value).encode("utf-8"))


class JsonListDigest:
    """:func:`digest_json` of a list, computed one item at a time: after ``add(x)`` for each
    item of ``items``, ``hexdigest()`` equals ``digest_json(list(items))`` (the same canonical
    bytes, fed to SHA-256 as they are made), so a listing of millions of rows is keyed
    without holding it."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"[")
        self.count = 0

    def add(self, item: Any) -> None:
        self._hash.update((("," if self.count else "") + canonical_json(item)).encode("utf-8"))
        self.count += 1

    def hexdigest(self) -> str:
        final = self._hash.copy()
        final.update(b"]")
        return final.hexdigest()


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"invalid {kind} name {name!r}: use lower-case letters, digits, '_', '-', '.'")
    return name


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"invalid artifact key {key!r}: expected {KEY_LENGTH} lower-case hex digits")
    return key


def artifact_key(
    stage: str, stage_version: int | str, config_digest: str, inputs: Mapping[str, str], params: Mapping[str, Any]
) -> str:
    """The content address of a stage's output.

    stage: the stage's name (e.g. "pseudo_label_shard"); stage_version: bump it when the
    stage's code changes what it writes; config_digest: digest of the model config the stage
    uses ("" if none); inputs: name -> key (or content digest) of each upstream artifact;
    params: the parameters that change the output (never paths of scratch space, run ids,
    clocks or worker counts).
    """
    check_name("stage", stage)
    payload = {
        "stage": stage,
        "stage_version": stage_version,
        "config_digest": config_digest,
        "inputs": dict(inputs),
        "params": dict(params),
    }
    return digest_bytes(canonical_json(payload).encode("utf-8"))[:KEY_LENGTH]
