"""Progress video (issue 16 point 4): --save-every K with --save-video writes an H.264 MP4 beside
the PNG (and the GIF), from generate and from batch items; one FrameRecorder encodes both."""

import sys

import pytest
import torch
from typer.testing import CliRunner

from clipforge.cli import app
from clipforge.config import ConfigError, RunConfig
from clipforge.errors import UsageError
from clipforge.frames import FrameRecorder
from clipforge.loop import Step

runner = CliRunner()


def _probe(path):
    """(metadata, frame count) of a video, read back by ffmpeg itself."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, sum(1 for _ in reader)


def test_recorder_encodes_h264(tmp_path):
    rec = FrameRecorder(every=2, video=True)
    for i in range(1, 8):  # steps 2, 4, 6 and the last (7) are kept
        rec(Step(i, 7, torch.rand(1, 3, 33, 45), torch.tensor(1.0), {}))
    files = rec.encoded()
    assert set(files) == {".gif", ".mp4"} and files[".mp4"][4:8] == b"ftyp"
    (tmp_path / "x.mp4").write_bytes(files[".mp4"])
    meta, n = _probe(tmp_path / "x.mp4")
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (46, 34) and n == 4  # sides rounded up to even for yuv420p


def test_save_video_needs_save_every():
    with pytest.raises(ConfigError, match="save_video.*save_every"):
        RunConfig(prompt="x", save_video=True)


def test_missing_encoder_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(UsageError, match=r"clipforge\[video\]"):
        FrameRecorder(every=1, video=True)


def test_generate_and_batch_write_the_video(tiny_clip_dir, tmp_path):
    common = ["--clip", str(tiny_clip_dir), "--size", "32", "--steps", "4", "--cutn", "2",
              "--save-every", "2", "--save-video", "-q"]
    r = runner.invoke(app, ["generate", "a red circle", *common, "--out", str(tmp_path / "a.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a.gif").is_file() and _probe(tmp_path / "a.mp4")[1] == 2
    (tmp_path / "list.txt").write_text("a red circle\n")
    r = runner.invoke(app, ["batch", str(tmp_path / "list.txt"), "--out", str(tmp_path / "b"),
                            *common])
    assert r.exit_code == 0, r.output
    (png,) = (tmp_path / "b").glob("*.png")
    assert png.with_suffix(".gif").is_file() and _probe(png.with_suffix(".mp4"))[1] == 2
    r = runner.invoke(app, ["generate", "x", "--save-video", "--out", str(tmp_path / "c.png")])
    assert r.exit_code == 2 and "save_every" in r.stderr
