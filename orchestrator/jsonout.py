"""JSON of results: NaN and infinities as null (standard JSON has neither), sorted keys."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def to_json(data: Any) -> str:
    """JSON with NaN and infinities written as null (standard JSON has neither)."""
    return json.dumps(_nan_to_none(data), indent=2, sort_keys=True)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
