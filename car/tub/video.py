"""Video files from BGR frames: H.264 in MP4 through PyAV (what browsers play), or Motion JPEG
in AVI through OpenCV (no extra package, but browsers do not play it).

PyAV's wheel ships ffmpeg with libx264, so nothing else is installed. The MP4 is yuv420p (the
only chroma layout every browser decodes) with its index at the front (``+faststart``), so a
browser can start playing it before it has the whole file.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from car.errors import TubError

KINDS = {".mp4": "H.264 (browsers play it)", ".avi": "Motion JPEG"}
INSTALL_AV = "pip install 'car-autopilot[video]'"


class VideoSink(Protocol):
    def write(self, frame_bgr: np.ndarray) -> None: ...
    def close(self) -> None: ...


def open_video(out: Path, fps: float, size: tuple[int, int]) -> VideoSink:
    """A sink for ``size`` = (width, height) frames at ``fps``, chosen by ``out``'s suffix."""
    suffix = out.suffix.lower()
    if suffix == ".mp4":
        return H264Sink(out, fps, size)
    if suffix == ".avi":
        return MjpegSink(out, fps, size)
    raise TubError(f"{out}: unknown video type; name it .mp4 (H.264) or .avi (Motion JPEG)")


def rate_fraction(fps: float) -> Fraction:
    """The frame rate as a small exact fraction (29.97 becomes 2997/100)."""
    return Fraction(fps).limit_denominator(1001)


class H264Sink:
    """H.264 (libx264, yuv420p) in an MP4 with its index first; frame N plays at N / fps.
    ``pixel_format`` is the frames' layout (bgr24, or rgb24); ``options`` are libx264's
    (CRF 20, preset veryfast by default)."""

    def __init__(self, out: Path, fps: float, size: tuple[int, int], *,
                 pixel_format: str = "bgr24", options: dict[str, str] | None = None):
        try:
            import av
        except ImportError:
            raise TubError(f"{out}: an .mp4 movie needs PyAV ({INSTALL_AV}); or name the output "
                           ".avi for Motion JPEG") from None
        self._av = av
        # yuv420p halves the chroma in both directions: the picture is padded to even sizes.
        self.width, self.height = size[0] + size[0] % 2, size[1] + size[1] % 2
        try:
            self._container = av.open(str(out), mode="w", options={"movflags": "+faststart"})
        except (OSError, av.FFmpegError) as exc:
            raise TubError(f"{out}: cannot write the movie: {exc}") from None
        rate = rate_fraction(fps)
        self._stream: Any = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._time_base = 1 / rate  # set on each frame too: the muxer changes the stream's
        self._stream.time_base = self._time_base
        self._stream.options = options or {"crf": "20", "preset": "veryfast"}
        self._format = pixel_format
        self._frames = 0

    def write(self, frame: np.ndarray) -> None:
        pad_h, pad_w = self.height - frame.shape[0], self.width - frame.shape[1]
        if pad_h or pad_w:
            frame = cv2.copyMakeBorder(frame, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        picture = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                   format=self._format)
        picture.pts = self._frames
        picture.time_base = self._time_base
        self._frames += 1
        self._container.mux(self._stream.encode(picture))

    def close(self) -> None:
        try:
            self._container.mux(self._stream.encode(None))  # flush the encoder's delay
        finally:
            self._container.close()

    def abort(self) -> None:
        """Close after a failure, keeping that failure the one reported (the caller removes
        the file)."""
        with contextlib.suppress(Exception):
            self._container.close()


class MjpegSink:
    """Motion JPEG in AVI through OpenCV."""

    def __init__(self, out: Path, fps: float, size: tuple[int, int]):
        self.size = size
        self._writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
        if not self._writer.isOpened():
            raise TubError(f"{out}: OpenCV cannot write Motion JPEG here; name it .mp4")

    def write(self, frame_bgr: np.ndarray) -> None:
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
            frame_bgr = cv2.resize(frame_bgr, self.size)
        self._writer.write(frame_bgr)

    def close(self) -> None:
        self._writer.release()
