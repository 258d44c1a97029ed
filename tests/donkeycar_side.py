"""Run by test_donkeycar_compat.py inside a virtualenv that has donkeycar 5.3.0 (numpy < 2).

It uses only donkeycar's own tub code, and writes what it saw as JSON to the file given
last (donkeycar prints a banner on stdout).

    python donkeycar_side.py write PATH OUT.json   # record a tub as donkeycar does
    python donkeycar_side.py read PATH OUT.json    # read a tub as donkeycar's training does
    python donkeycar_side.py append PATH OUT.json  # add a session to an existing tub
    python donkeycar_side.py reuse PATH OUT.json   # a session after a crash reuses an index
"""

import json
import sys

import numpy as np
from donkeycar.parts.tub_v2 import Tub
from PIL import Image

INPUTS = ["cam/image_array", "user/angle", "user/throttle", "user/mode", "count", "flag",
          "imu/list", "imu/array"]
TYPES = ["image_array", "float", "float", "str", "int", "boolean", "list", "nparray"]


def frame(i):
    y, x = np.mgrid[0:120, 0:160]
    return np.stack([x + i % 50, y + 40, np.full_like(x, 20 + i % 90)], -1).astype(np.uint8)


def record(i):
    return {"cam/image_array": frame(i), "user/angle": ((i % 21) - 10) / 10.0,
            "user/throttle": 0.25, "user/mode": "user", "count": i, "flag": i % 2 == 0,
            "imu/list": [i, 0.5], "imu/array": np.array([i / 10.0, -1.0])}


def write(path):
    tub = Tub(path, inputs=INPUTS, types=TYPES, metadata=["car:donkey"])
    for i in range(1234):
        tub.write_record(record(i))
    tub.delete_records(list(range(5, 10)))
    tub.delete_last_n_records(3)
    tub.close()
    # A second session. donkeycar must be given the inputs again: a Tub reopened without
    # them writes records that hold only the private fields.
    tub = Tub(path, inputs=INPUTS, types=TYPES)
    for i in range(10):
        tub.write_record(record(2000 + i))
    tub.close()


def reuse(path):
    """What donkeycar does after a kill -9 that left its manifest one record behind: the
    next session reuses that index, overwriting its image, across a catalog rollover."""
    tub = Tub(path, inputs=INPUTS, types=TYPES, max_catalog_len=5)
    for i in range(6):
        tub.write_record(record(i))
    tub.close()
    with open(f"{path}/manifest.json") as f:
        lines = f.read().splitlines()
    catalogs = json.loads(lines[4])
    catalogs["current_index"] -= 1
    lines[4] = json.dumps(catalogs)
    with open(f"{path}/manifest.json", "w") as f:
        f.write("\n".join(lines) + "\n")
    tub = Tub(path, inputs=INPUTS, types=TYPES, max_catalog_len=5)
    for i in range(4):
        tub.write_record(record(100 + i))
    tub.close()


def append(path):
    tub = Tub(path, inputs=INPUTS, types=TYPES)
    for i in range(5):
        tub.write_record(record(3000 + i))
    tub.close()


def read(path):
    tub = Tub(path, read_only=True)
    records = list(tub)
    images = {}
    for rec in records[:: max(1, len(records) // 20)]:
        name = rec["cam/image_array"]
        pixels = np.asarray(Image.open(f"{path}/images/{name}"))
        images[name] = [list(pixels.shape), float(pixels.astype(np.float64).mean())]
    return {"len": len(tub), "records": records, "images": images}


if __name__ == "__main__":
    action, tub_path, out_path = sys.argv[1:4]
    result = {"write": write, "append": append, "reuse": reuse, "read": read}[action](tub_path)
    with open(out_path, "w") as out:
        json.dump(result if result is not None else read(tub_path), out)
