"""PNG metadata, atomic writes and safe names (BAD_INPUTS rows 3, 4, 13, 14)."""

import errno
import os

import pytest
import torch

from clipforge.config import ConfigError, RunConfig
from clipforge.frames import FrameRecorder
from clipforge.outputs import a1111_parameters, atomic_write_bytes, default_name, \
    parse_parameters, read_config, read_png_text, safe_join, save_png, slugify, sweep_temp_files

TRICKY = [
    "a fox:1.5 | blur:-0.5",
    'Steps: 5, Seed: 1, "quoted", commas, and\nnew lines',
    "🦊 emoji, שלום right-to-left, e\u0301 combining, zero\u200bwidth, CRLF\r\nend",
    "Negative prompt: inside the prompt\nstill the prompt",
]


@pytest.mark.parametrize("prompt", TRICKY)
def test_png_round_trips_config_and_parameters(tmp_path, prompt):
    cfg = RunConfig(prompt=prompt, negative_prompt="blurry, dark", seed=42, width=64, height=32)
    path = save_png(tmp_path / "x.png", torch.rand(1, 3, 32, 64), cfg)
    assert read_config(path) == cfg
    params = parse_parameters(read_png_text(path)["parameters"])
    assert params["prompt"] == prompt and params["negative_prompt"] == "blurry, dark"
    assert params["Seed"] == "42" and params["Size"] == "64x32" and params["Steps"] == "200"


def test_parameters_text_shape():
    text = a1111_parameters(RunConfig(prompt="p", clip=("shapes", "shapes-judge@0.5")))
    prompt, line = text.split("\n")  # no negative prompt: no line for it, as in A1111
    assert prompt == "p" and line.startswith("Steps: 200, Sampler: adam, Schedule type: "
                                             "constant, Seed: 0, Size: 256x256")
    assert parse_parameters(text)["Model"] == "shapes + shapes-judge@0.5"


def test_metadata_keeps_a_capped_prompt(tmp_path):
    with pytest.warns(UserWarning):
        cfg = RunConfig(prompt="x" * 100_000)
    path = save_png(tmp_path / "x.png", torch.rand(1, 3, 8, 8), cfg)
    assert len(read_config(path).prompt) == 8192


def test_png_without_settings(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(ConfigError, match="no clipforge settings"):
        read_config(tmp_path / "plain.png")


def test_disk_full_leaves_no_partial_file(tmp_path, monkeypatch):  # row 13
    target = tmp_path / "final.png"
    target.write_bytes(b"old")
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space"):
        save_png(target, torch.rand(1, 3, 8, 8), RunConfig(prompt="x"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["final.png"]


def test_missing_folder_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "no" / "such" / "x.png", b"data")


def test_sweep_removes_stale_temp_files(tmp_path):
    (tmp_path / ".x.png.abc.clipforge-tmp").write_bytes(b"partial")
    (tmp_path / "keep.png").write_bytes(b"ok")
    assert sweep_temp_files(tmp_path) == 1 and os.listdir(tmp_path) == ["keep.png"]


@pytest.mark.parametrize("text", ["../../x", "/etc/passwd", "a/b\\c", "..", "🦊🦊🦊", "",
                                  "x" * 1000, "CON", "a\x00b"])
def test_slugs_are_ascii_safe(text):  # rows 3, 14
    s = slugify(text)
    assert s and s.isascii() and "/" not in s and ".." not in s and len(s.encode()) < 255
    assert set(s) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_default_names_stay_inside_the_folder(tmp_path):
    cfg = RunConfig(prompt="../../x", seed=3)
    name = default_name(cfg, 7)
    assert name == "0007-x-s3.png"
    assert safe_join(tmp_path, name).parent == tmp_path.resolve()
    for bad in ("../x.png", "a/b.png", "..", "/etc/passwd"):
        with pytest.raises(ConfigError):
            safe_join(tmp_path, bad)


def test_progress_gif(tmp_path):
    from PIL import Image

    from clipforge.loop import Step

    rec = FrameRecorder(every=2)
    for i in range(1, 6):
        rec(Step(i, 5, torch.full((1, 3, 8, 8), i / 5), torch.tensor(0.0)))
    path = rec.save_gif(tmp_path / "p.gif")
    with Image.open(path) as im:
        assert im.n_frames == 3  # steps 2, 4 and the last


def test_outputs_are_readable_by_others_as_umask_allows(tmp_path):
    mask = os.umask(0o022)
    try:
        path = save_png(tmp_path / "x.png", torch.rand(1, 3, 4, 4), RunConfig(prompt="x"))
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    from clipforge.outputs import atomic_dir

    out = tmp_path / "sub" / "model"
    mask = os.umask(0o022)
    try:
        with atomic_dir(out) as tmp:
            assert tmp.parent == out.parent and not out.exists()
            (tmp / "config.json").write_text("{}")
    finally:
        os.umask(mask)
    assert (out / "config.json").read_text() == "{}"
    assert out.stat().st_mode & 0o777 == 0o755
    with pytest.raises(FileExistsError):
        with atomic_dir(out):
            pass
    failed = tmp_path / "sub" / "failed"
    with pytest.raises(OSError, match="disk full"):
        with atomic_dir(failed) as tmp:
            (tmp / "half.bin").write_bytes(b"12")
            raise OSError(errno.ENOSPC, "disk full")
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]  # no temp folder left
