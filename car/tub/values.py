"""Checking and converting a record's values to what its tub's types store.

Runs in the caller's thread before a record is queued, so a bad value (a NaN steering, an
image of the wrong dtype, an unknown key) is reported where it was made, not later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from car.errors import TubError
from car.tub.format import IMAGE_TYPES, TYPES
from car.tub.images import check_image_array


def check_inputs(inputs: list[str], types: list[str]) -> None:
    """Inputs and types a new tub may be created with."""
    if len(inputs) != len(types):
        raise TubError(f"tub inputs ({len(inputs)}) and types ({len(types)}) differ in length")
    if len(set(inputs)) != len(inputs):
        raise TubError(f"tub inputs repeat a name: {inputs}")
    for name, type_name in zip(inputs, types):
        if not name or name.startswith("_"):
            raise TubError(f"tub input name {name!r} is empty or starts with '_' (reserved)")
        if type_name not in TYPES:
            raise TubError(f"unknown type '{type_name}' of input '{name}'; "
                           f"known types: {', '.join(TYPES)}")


def prepare_record(input_types: Mapping[str, str], record: Mapping[str, Any]) -> dict[str, Any]:
    """The record with each value converted for storage; images become private copies.

    None values are left out, as donkeycar does. Unknown keys and values that JSON cannot
    hold (NaN, infinity, objects) raise a TubError naming the field.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        if value is None:
            continue
        type_name = input_types.get(key)
        if type_name is None:
            raise TubError(f"field '{key}' is not an input of this tub "
                           f"(inputs: {', '.join(input_types)})")
        out[key] = convert(key, type_name, value)
    return out


def convert(key: str, type_name: str, value: Any) -> Any:
    if type_name in IMAGE_TYPES:
        return check_image_array(value, type_name, key)
    try:
        if type_name == "float":
            converted: Any = float(value)
        elif type_name == "int":
            converted = int(value)
            if converted != value:
                raise ValueError("not a whole number")
        elif type_name == "str":
            if not isinstance(value, str):
                raise ValueError("not a string")
            converted = value
        elif type_name == "boolean":
            converted = bool(value)
        elif type_name == "nparray":
            converted = np.asarray(value).tolist()
        else:  # list / vector
            converted = [v.item() if isinstance(v, np.generic) else v for v in value]
    except (TypeError, ValueError) as exc:
        raise TubError(f"field '{key}' ({type_name}): cannot store {value!r}: {exc}") from None
    _check_finite(key, converted)
    return converted


def _check_finite(key: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise TubError(f"field '{key}' is {value}; a tub stores only finite numbers "
                       "(check the model or sensor that produced it)")
    if isinstance(value, list):
        for item in value:
            _check_finite(key, item)
    elif not isinstance(value, (str, int, float, bool, list)):
        raise TubError(f"field '{key}': {type(value).__name__} cannot be stored as JSON")
