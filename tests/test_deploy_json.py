"""Bad numbers in model files: a manifest, a frame cache index or a checkpoint holding a
number of 5,000 digits or arrays nested 5,000 deep is one line naming the file and the key
(Python's own errors are "Exceeds the limit (4300 digits)" and RecursionError), never an
internal error."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from car.cli import main
from deploy.engine import EngineError, load_engine
from deploy.json_file import JsonFileError, parse_json, read_json
from deploy.manifest import ManifestError, load_manifest

FIXTURE = Path(__file__).parent / "fixtures" / "pilot_linear.onnx"
LONG = "1" * 5000
DEEP = "[" * 5000 + "]" * 5000


def model_with(tmp_path: Path, key: str, raw: str) -> Path:
    """The fixture model beside its manifest with ``"training": {key: <raw JSON>}``."""
    model = tmp_path / "pilot.onnx"
    shutil.copy(FIXTURE, model)
    text = FIXTURE.with_suffix(".json").read_text()
    data = json.loads(text)
    data["training"] = {"tubs": ["a"], key: "PLACEHOLDER"}
    model.with_suffix(".json").write_text(json.dumps(data, indent=2).replace(
        '"PLACEHOLDER"', raw))
    return model


@pytest.mark.parametrize("raw, problem", [(LONG, "a number of 5000 digits"),
                                          (DEEP, "more than 64 deep")])
def test_a_manifest_with_a_hostile_number_is_one_line_naming_file_and_key(
        raw, problem, tmp_path, capsys):
    model = model_with(tmp_path, "notes", raw)
    for error, call in ((ManifestError, load_manifest), (EngineError, load_engine)):
        with pytest.raises(error) as caught:
            call(model)
        text = str(caught.value)
        assert "\n" not in text and problem in text, text
        assert str(model.with_suffix(".json")) in text and '(key "notes")' in text
    assert main(["build", str(model)]) == 1  # reads the manifest before anything else
    err = capsys.readouterr().err.strip()
    assert err.startswith("car: error: ") and "\n" not in err and "internal" not in err
    assert problem in err and "notes" in err


def test_numbers_a_manifest_cannot_use_are_refused_as_malformed(tmp_path):
    model = model_with(tmp_path, "notes", "1")
    data = json.loads(model.with_suffix(".json").read_text())
    for key, value in (("sequence_length", "Infinity"), ("sequence_length", "1e30"),
                       ("version", "1" * 99)):
        text = json.dumps({**data, key: "PLACEHOLDER"}).replace('"PLACEHOLDER"', value)
        model.with_suffix(".json").write_text(text)
        with pytest.raises(ManifestError) as caught:
            load_manifest(model)
        assert "\n" not in str(caught.value) and str(model.with_suffix(".json")) in str(
            caught.value)


def test_the_json_reader_names_file_line_and_key_for_every_failure(tmp_path):
    path = tmp_path / "x.json"
    cases = {b'{"a": 1,\n "b": ' + LONG.encode() + b"}": 'line 2 (key "b")',
             b'{"a": {"b": ' + DEEP.encode() + b"}}": 'line 1 (key "b")',
             b'{"a": "[[[[[[", "b": [1, 2]}': None,  # brackets inside strings do not count
             b'{"a": 1,\n "b": }': "line 2 column 7",
             b'{"a": "\xff"}': "not UTF-8 text (byte 0xff at line 1)"}
    for data, expected in cases.items():
        path.write_bytes(data)
        if expected is None:
            assert read_json(path) == {"a": "[[[[[[", "b": [1, 2]}
            continue
        with pytest.raises(JsonFileError) as caught:
            read_json(path, "manifest")
        assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)
    path.write_bytes(b"[" + b"0," * 100 + b"0]")
    with pytest.raises(JsonFileError, match="too large"):
        read_json(path, max_bytes=100)
    with pytest.raises(JsonFileError, match="cannot read"):
        read_json(tmp_path / "missing.json")
    unterminated = '"' + '\\"' * 100_000  # a string that never ends: scanned once
    with pytest.raises(JsonFileError, match="not valid JSON"):
        parse_json(unterminated, "x")


@pytest.mark.parametrize("raw", [LONG, DEEP])
def test_a_hostile_frame_cache_index_is_rebuilt_with_one_line(raw, tmp_path, caplog):
    from training.cache import Shard, _open_existing

    array, index = tmp_path / "k.u8", tmp_path / "k.json"
    shard, frame = Shard("k", range(2), array), (4, 4, 3)
    array.write_bytes(bytes(2 * int(np.prod(frame))))
    index.write_text('{"shape": [2, 4, 4, 3], "status": [0, 0], "x": ' + raw + "}")
    with caplog.at_level(logging.INFO):
        assert _open_existing(shard, frame) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"{index}: ") and line.endswith("building the cache again")
    index.write_text('{"shape": [2, 4, 4, 3], "status": [0, 0]}')
    assert _open_existing(shard, frame) is not None


def nested(depth: int) -> list:
    top = inner = []
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return top


@pytest.mark.parametrize("value, problem", [(10 ** 200, "integer of about 20"),
                                            (nested(5000), "nests more than 64 deep")])
def test_a_checkpoint_with_hostile_metadata_is_one_line_naming_the_key(
        value, problem, tmp_path, capsys):
    import torch

    from training.checkpoint import load_checkpoint
    from training.export import export_untrained
    from training.records import DataError

    checkpoint = export_untrained("linear", tmp_path / "m").with_suffix(".pt")
    payload = torch.load(checkpoint, weights_only=True)
    payload["training"] = {"tubs": [], "notes": value}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(30_000)  # pickling 5,000 levels recurses
    try:
        torch.save(payload, checkpoint)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(DataError) as caught:
        load_checkpoint(checkpoint)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{checkpoint}: ") and problem in text
    assert "training.notes" in text
    assert main(["export", str(checkpoint)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("car: error: ") and "\n" not in err and "internal" not in err


def test_a_3d_checkpoint_from_before_the_residual_network_asks_for_a_retrain(tmp_path):
    import torch

    from training.checkpoint import load_checkpoint
    from training.export import export_untrained
    from training.records import DataError

    checkpoint = export_untrained("3d", tmp_path / "m").with_suffix(".pt")
    payload = torch.load(checkpoint, weights_only=True)
    payload["state_dict"] = {"features.0.weight": torch.zeros(16, 3, 3, 5, 5)}  # the old net
    torch.save(payload, checkpoint)
    with pytest.raises(DataError, match=r"its weights do not fit today's 3d network .* "
                                        r"residual .* retrain it") as caught:
        load_checkpoint(checkpoint)
    assert "\n" not in str(caught.value)
