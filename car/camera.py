"""Cameras: the Camera protocol and its real sources.

- ``usb:INDEX``: a V4L2 device through OpenCV;
- ``csi`` / ``csi:SENSOR``: a Jetson CSI camera through a GStreamer pipeline;
- ``gst:PIPELINE``: any GStreamer pipeline ending in an appsink;
- ``replay:TUB``: a recorded tub, frame by frame.

Live cameras are read on a background thread that keeps only the newest frame (GStreamer
pipelines end in ``appsink drop=true max-buffers=1``), so the loop never works on a frame
that sat in a queue. The simulators' cameras live with their worlds (``car.sim.link``,
``car.sim.donkey.link``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import cv2
import numpy as np

from car.errors import CarError
from car.frames import Frame

log = logging.getLogger(__name__)
Clock = Callable[[], float]
DEAD_AFTER_S = 1.0  # a live camera silent this long has failed


class CameraError(CarError):
    """A camera that cannot be opened, or that stopped delivering frames."""


class EndOfFrames(Exception):
    """A finite source (a tub replay) has no more frames: a clean end, not a failure."""


class Camera(Protocol):
    """``read()`` → the newest Frame; raises CameraError on failure, EndOfFrames at the end.
    ``size`` is (width, height) of its frames."""

    size: tuple[int, int]

    def read(self) -> Frame: ...

    def close(self) -> None: ...


def has_gstreamer() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def csi_pipeline(sensor_id: int, width: int, height: int, fps: float,
                 capture_width: int = 1280, capture_height: int = 720, flip: int = 0) -> str:
    """A Jetson CSI camera pipeline (nvarguscamerasrc), scaled on the ISP to the model's
    size, ending in an appsink that holds only the newest frame."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), "
            f"width={capture_width}, height={capture_height}, framerate={round(fps)}/1 ! "
            f"nvvidconv flip-method={flip} ! video/x-raw, width={width}, height={height}, "
            "format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


def ensure_newest_only(pipeline: str) -> str:
    """Make a user's pipeline end in an appsink that drops all but the newest frame."""
    head, sep, tail = pipeline.rpartition("appsink")
    if not sep:
        return f"{pipeline} ! appsink drop=true max-buffers=1 sync=false"
    for option in ("drop=true", "max-buffers=1"):
        if option.split("=")[0] not in tail:
            tail = f" {option}{tail}"
    return head + sep + tail


class OpenCVCamera:
    """A live camera (USB index or GStreamer pipeline) read on a background thread."""

    def __init__(self, source: int | str, width: int, height: int, fps: float,
                 clock: Clock = time.monotonic, open_timeout_s: float = 5.0):
        self.source = source
        self.size = (width, height)
        self._clock = clock
        if isinstance(source, str):
            if not has_gstreamer():
                raise CameraError("this OpenCV was built without GStreamer, so it cannot open "
                                  "a CSI or gst: camera; on a Jetson use JetPack's OpenCV "
                                  "(python3-opencv), not the pip wheel")
            self._cap = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
        else:
            self._cap = cv2.VideoCapture(source, cv2.CAP_V4L2)
        if not self._cap.isOpened():
            raise CameraError(f"cannot open camera {source!r}; check it is plugged in and not "
                              "used by another program (`v4l2-ctl --list-devices`)")
        if not isinstance(source, str):
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            self._cap.set(cv2.CAP_PROP_FPS, fps)
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._lock = threading.Condition()
        self._latest: Frame | None = None
        self._delivered = -1
        self._seq = 0
        self._failed: str | None = None
        self._running = True
        self._thread = threading.Thread(target=self._grab, name="camera", daemon=True)
        self._thread.start()
        with self._lock:
            self._lock.wait_for(lambda: self._latest is not None or self._failed is not None,
                                timeout=open_timeout_s)
        if self._latest is None:
            self.close()
            raise CameraError(f"camera {source!r} opened but gave no frame in "
                              f"{open_timeout_s:g} s")

    def _grab(self) -> None:
        try:
            self._grab_frames()
        except Exception as exc:  # e.g. a pipeline giving a pixel format we cannot convert
            with self._lock:
                self._failed = f"camera {self.source!r} failed: {type(exc).__name__}: {exc}"
                self._lock.notify_all()

    def _grab_frames(self) -> None:
        last_ok = time.monotonic()
        while self._running:
            ok, bgr = self._cap.read()  # may block: read() notices a silent camera too
            if not ok or bgr is None:
                if time.monotonic() - last_ok > DEAD_AFTER_S:
                    with self._lock:
                        self._failed = f"camera {self.source!r} stopped delivering frames"
                        self._lock.notify_all()
                    return
                time.sleep(0.005)
                continue
            last_ok = time.monotonic()
            now = self._clock()
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if (rgb.shape[1], rgb.shape[0]) != self.size:
                rgb = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA)
            with self._lock:
                self._latest = Frame(rgb, now, self._seq)
                self._seq += 1
                self._lock.notify_all()

    def read(self, timeout_s: float = 0.1) -> Frame:
        """The newest frame; waits up to ``timeout_s`` for one newer than the last read.
        A camera whose newest frame is over ``DEAD_AFTER_S`` old has failed."""
        with self._lock:
            self._lock.wait_for(lambda: self._failed is not None or (
                self._latest is not None and self._latest.seq > self._delivered),
                timeout=timeout_s)
            if self._failed is not None:
                raise CameraError(self._failed)
            assert self._latest is not None
            silent_s = self._clock() - self._latest.time_s
            if silent_s > DEAD_AFTER_S:
                raise CameraError(f"camera {self.source!r} gave no frame for "
                                  f"{silent_s:.1f} s")
            self._delivered = self._latest.seq
            return self._latest  # may be the previous frame: the loop judges its age

    def close(self) -> None:
        self._running = False
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        if self._thread.is_alive():  # stuck in a blocking read: releasing now could crash
            log.warning("camera %r did not stop; leaving it to the process exit", self.source)
            return
        self._cap.release()


class ReplayCamera:
    """A tub's frames in order (records ``start`` to ``end`` by index), stamped with the
    loop's clock as they are read, with their record index and session. Records with a
    missing or corrupt image are skipped and counted."""

    def __init__(self, path: str, clock: Clock = time.monotonic, *, start: int | None = None,
                 end: int | None = None):
        from car.tub.reader import Tub

        self.tub = Tub(path)
        if "cam/image_array" not in self.tub.inputs:
            raise CameraError(f"{path}: this tub has no cam/image_array frames to replay")
        self._clock = clock
        self._seq = 0
        self._start, self._end = start, end
        self.skipped = 0
        self.record: dict[str, Any] | None = None  # the record of the last frame read
        self.size = self._first_frame_size(path)
        self._records: Iterator[dict[str, Any]] = self._in_range()

    def _in_range(self) -> Iterator[dict[str, Any]]:
        for record in self.tub.records():
            i = record["_index"]
            if (self._start is not None and i < self._start) or \
                    (self._end is not None and i >= self._end):
                continue
            yield record

    def _first_frame_size(self, path: str) -> tuple[int, int]:
        for record in self._in_range():
            try:
                height, width = self.tub.load_image(record).shape[:2]
                return width, height
            except CarError:
                continue
        raise CameraError(f"{path}: no readable frame to replay")

    def read(self) -> Frame:
        for record in self._records:
            try:
                image = self.tub.load_image(record)
            except CarError as exc:
                self.skipped += 1
                log.warning("replay: skipping record %s: %s", record.get("_index"), exc)
                continue
            self.record = record
            frame = Frame(np.ascontiguousarray(image), self._clock(), self._seq,
                          index=record["_index"], session=record.get("_session_id"))
            self._seq += 1
            return frame
        raise EndOfFrames

    def close(self) -> None:
        self._records = iter(())


def open_camera(spec: str, width: int, height: int, fps: float,
                clock: Clock = time.monotonic) -> Camera:
    """A camera from its spec (see the module doc); 'sim' is opened by the simulator."""
    kind, _, arg = spec.partition(":")
    if kind == "usb":
        if not arg.isdigit():
            raise CameraError(f"--camera {spec!r}: expected usb:INDEX, e.g. usb:0")
        return OpenCVCamera(int(arg), width, height, fps, clock)
    if kind == "csi":
        if arg and not arg.isdigit():
            raise CameraError(f"--camera {spec!r}: expected csi or csi:SENSOR_ID, e.g. csi:0")
        return OpenCVCamera(csi_pipeline(int(arg or 0), width, height, fps), width, height,
                            fps, clock)
    if kind == "gst":
        if not arg:
            raise CameraError("--camera gst: needs a pipeline, e.g. 'gst:v4l2src ! videoconvert "
                              "! appsink'")
        return OpenCVCamera(ensure_newest_only(arg), width, height, fps, clock)
    if kind == "replay":
        if not arg:
            raise CameraError("--camera replay: needs a tub folder, e.g. replay:data/tub_1")
        return ReplayCamera(arg, clock)
    raise CameraError(f"unknown camera {spec!r}; use sim, usb:INDEX, csi[:SENSOR], "
                      "gst:PIPELINE or replay:TUB")
