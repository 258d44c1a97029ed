"""`car tub movie`: H.264 that Chromium plays, at the capture rate, with a pilot beside the
user's commands; a failed write leaves nothing behind."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from car.cli import main
from car.tub.movie import PILOT_COLOUR

av = pytest.importorskip("av", reason="PyAV is in the dev extra")

FIXTURES = Path(__file__).parent / "fixtures"


def probe(path: Path) -> tuple[str, str, float, int, np.ndarray]:
    """(codec, pixel format, frame rate, frames, the first frame as BGR) read by PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return (stream.codec_context.name, stream.codec_context.pix_fmt,
                float(stream.average_rate), len(frames), frames[0])


def test_a_sim_tub_plays_at_its_capture_rate_with_the_pilot(
        sim_tub_pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "drive.mp4"
    code = main(["tub", "movie", str(sim_tub_pristine), "--out", str(out), "--end", "60",
                 "--scale", "2", "--model", str(FIXTURES / "pilot_linear.onnx")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    # `sim record --hz 10`: the records are written far faster than that, captured at 10 Hz.
    assert re.search(r"\(60 frames at 10\.0 fps, the capture rate\), with pilot_linear\.onnx",
                     printed)
    codec, pix_fmt, fps, frames, first = probe(out)
    assert (codec, pix_fmt, fps, frames) == ("h264", "yuv420p", 10.0, 60)
    assert first.shape[1] == 320
    panel = first[240:].astype(int)  # the pilot's bars are drawn in their own colour
    near = np.abs(panel - np.array(PILOT_COLOUR)).sum(axis=2) < 60
    assert near.sum() > 30
    assert not list(tmp_path.glob(".*partial*"))


def test_a_donkeycar_tub_without_capture_times(real_tub_pristine: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # The shared 2020 tub was written at ~300 Hz (a batch write): no camera runs that fast.
    out = tmp_path / "real.avi"
    assert main(["tub", "movie", str(real_tub_pristine), "--out", str(out), "--end", "30",
                 "--scale", "1"]) == 0
    assert "(30 frames at 20.0 fps, the default: records were written at" in \
        capsys.readouterr().out
    assert probe(out)[0] == "mjpeg"


def test_a_failed_movie_leaves_no_file_and_keeps_the_old_one(
        real_tub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.mp4"
    assert main(["tub", "movie", str(real_tub), "--out", str(out), "--end", "5"]) == 0
    before = out.read_bytes()
    (real_tub / "images" / "7_cam_image_array_.jpg").write_bytes(b"")
    assert main(["tub", "movie", str(real_tub), "--out", str(out), "--end", "10"]) == 1
    assert "image of record 7 is unreadable" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mp4", "tub"]  # no .partial


def test_an_unknown_video_type(real_tub_pristine: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tub", "movie", str(real_tub_pristine), "--out", str(tmp_path / "m.mkv")]) == 1
    assert "name it .mp4 (H.264) or .avi (Motion JPEG)" in capsys.readouterr().err


def test_chromium_plays_it_at_the_right_speed(sim_tub_pristine: Path, tmp_path: Path) -> None:
    from tests.browser import ARGS, CHROMIUM, require_browser

    require_browser()
    from playwright.sync_api import sync_playwright

    out = tmp_path / "drive.mp4"
    assert main(["tub", "movie", str(sim_tub_pristine), "--out", str(out), "--end", "40"]) == 0
    page_file = tmp_path / "play.html"
    page_file.write_text('<video id="v" src="drive.mp4" muted playsinline></video>')
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(page_file.as_uri())
            page.wait_for_function("document.getElementById('v').readyState >= 1",
                                   timeout=10000)
            # 40 frames captured at 10 Hz: 4 s of driving, not the write rate's fraction of it
            duration = page.evaluate("document.getElementById('v').duration")
            assert duration == pytest.approx(4.0, abs=0.15)
            assert page.evaluate("[document.getElementById('v').videoWidth,"
                                 " document.getElementById('v').videoHeight]") == [480, 404]
            page.evaluate("document.getElementById('v').play()")
            page.wait_for_function("document.getElementById('v').currentTime > 0.5",
                                   timeout=10000)  # it decodes and plays
            assert page.evaluate("document.getElementById('v').error") is None
        finally:
            browser.close()
