"""Run by test_lerobot.py inside a virtualenv that has lerobot 0.4.4 (and its own torch).

It uses only LeRobot's own dataset code, and writes what it saw as JSON to the file given
last.

    python lerobot_side.py read DIR OUT.json    # load a dataset as LeRobot's training does
    python lerobot_side.py write DIR OUT.json   # record a small dataset with LeRobot's API
"""

import json
import sys

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

CAMERA = "observation.images.front"
EPISODES = (7, 5)  # frames per episode of the dataset `write` makes
FPS = 10


def picture(episode, frame):
    y, x = np.mgrid[0:48, 0:64]
    red = (x * 3 + frame * 9) % 256
    green = (y * 4 + episode * 60) % 256
    blue = np.full_like(x, 40 + 20 * frame % 200)
    return np.stack([red, green, blue], -1).astype(np.uint8)


def action(episode, frame):
    return [((frame % 5) - 2) / 4.0 + episode * 0.01, 0.1 + 0.05 * frame]


def read(root):
    dataset = LeRobotDataset("local/car_export", root=root, video_backend="pyav")
    meta = dataset.meta
    step = max(1, len(dataset) // 12)
    items = {}
    for i in [*range(0, len(dataset), step), len(dataset) - 1]:
        item = dataset[i]
        image = item[meta.video_keys[0]]
        items[str(i)] = {
            "action": item["action"].tolist(),
            "state": item["observation.state"].tolist() if "observation.state" in item else None,
            "episode_index": int(item["episode_index"]),
            "frame_index": int(item["frame_index"]),
            "index": int(item["index"]),
            "timestamp": float(item["timestamp"]),
            "task": item["task"],
            "image_shape": list(image.shape),  # channels first, floats in [0, 1]
            "image_mean": float(image.mean()) * 255.0,
        }
    return {
        "len": len(dataset),
        "num_episodes": dataset.num_episodes,
        "fps": dataset.fps,
        "video_keys": list(meta.video_keys),
        "features": sorted(meta.features),
        "stats_keys": sorted(meta.stats) if meta.stats is not None else None,
        "episode_lengths": [int(e["length"]) for e in meta.episodes],
        "items": items,
    }


def write(root):
    features = {
        "action": {"dtype": "float32", "shape": (2,), "names": ["steer", "gas"]},
        "observation.state": {"dtype": "float32", "shape": (1,), "names": ["speed"]},
        CAMERA: {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
    }
    dataset = LeRobotDataset.create("local/lerobot_made", fps=FPS, features=features, root=root,
                                    robot_type="toy", use_videos=True)
    frames = []
    for episode, length in enumerate(EPISODES):
        for frame in range(length):
            image = picture(episode, frame)
            dataset.add_frame({"action": np.array(action(episode, frame), np.float32),
                               "observation.state": np.array([frame / 10.0], np.float32),
                               CAMERA: image, "task": "drive a lap"})
            frames.append({"episode": episode, "frame": frame, "action": action(episode, frame),
                           "image_mean": float(image.astype(np.float64).mean())})
        dataset.save_episode()
    dataset.finalize()
    return {"fps": FPS, "episodes": list(EPISODES), "frames": frames,
            "vcodec": str(getattr(dataset, "vcodec", ""))}


if __name__ == "__main__":
    action_name, root_path, out_path = sys.argv[1:4]
    result = {"read": read, "write": write}[action_name](root_path)
    with open(out_path, "w") as out:
        json.dump(result, out)
