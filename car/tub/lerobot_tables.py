"""The parquet tables and statistics of a LeRobot v3.0 dataset, laid out as LeRobot 0.4
writes them (the column types, the Hugging Face ``datasets`` schema note, pandas' index of
the tasks), so that LeRobot reads ours as its own. ``pa`` is the pyarrow module."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def frames_table(pa: Any, columns: dict[str, list[Any]], features: dict[str, Any]) -> Any:
    """One row per frame. A feature of shape [1] is a plain column; a vector is a
    fixed-size list, as ``datasets`` stores its ``List(length=N)``."""
    arrays, fields, described = [], [], {}
    for key, feature in features.items():
        if feature["dtype"] in ("video", "image"):
            continue
        value_type = getattr(pa, feature["dtype"])()
        shape = list(feature["shape"])
        value = {"dtype": feature["dtype"], "_type": "Value"}
        if shape == [1]:
            flat = np.asarray(columns[key], dtype=feature["dtype"]).reshape(-1)
            array = pa.array(flat, type=value_type)
            described[key] = value
        else:
            flat = np.asarray(columns[key], dtype=feature["dtype"]).reshape(-1)
            array = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=value_type), shape[0])
            described[key] = {"feature": value, "length": shape[0], "_type": "List"}
        arrays.append(array)
        fields.append(pa.field(key, array.type))
    note = {"info": {"features": described}}
    schema = pa.schema(fields, metadata={"huggingface": json.dumps(note)})
    return pa.Table.from_arrays(arrays, schema=schema)


def episode_table(pa: Any, rows: list[dict[str, Any]]) -> Any:
    """One row per episode: where its frames are, and its statistics."""
    return pa.Table.from_pylist(rows)


def tasks_table(pa: Any, tasks: list[str]) -> Any:
    """The tasks with their task_index, the task text being pandas' index (LeRobot looks a
    task up by ``tasks.iloc[task_index].name``)."""
    pandas = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema([pa.field("task_index", pa.int64()),
                        pa.field("__index_level_0__", pa.string())],
                       metadata={"pandas": json.dumps(pandas)})
    return pa.Table.from_arrays([pa.array(range(len(tasks)), pa.int64()), pa.array(tasks)],
                                schema=schema)


def column_stats(values: np.ndarray) -> dict[str, list[Any]]:
    """min, max, mean, std, count and quantiles of a column, per element of a vector
    column; lists, as ``stats.json`` and the episode table hold them."""
    array = values.reshape(len(values), -1)
    as_float = array.astype(np.float64)
    stats: dict[str, list[Any]] = {
        "min": array.min(0).tolist(), "max": array.max(0).tolist(),
        "mean": as_float.mean(0).tolist(), "std": as_float.std(0).tolist(),
        "count": [len(array)],
    }
    for name, q in QUANTILES.items():
        stats[name] = np.quantile(as_float, q, axis=0).tolist()
    return stats


def image_stats(samples: list[np.ndarray]) -> dict[str, list[Any]]:
    """Per-channel statistics of RGB frames, scaled to [0, 1], each of shape (3, 1, 1)."""
    pixels = np.stack(samples).reshape(-1, 3).astype(np.float64) / 255.0

    def channels(values: np.ndarray) -> list[Any]:
        return [[[float(v)]] for v in values]

    stats: dict[str, list[Any]] = {
        "min": channels(pixels.min(0)), "max": channels(pixels.max(0)),
        "mean": channels(pixels.mean(0)), "std": channels(pixels.std(0)),
        "count": [len(samples)],
    }
    for name, q in QUANTILES.items():
        stats[name] = channels(np.quantile(pixels, q, axis=0))
    return stats
