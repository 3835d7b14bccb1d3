"""Output targets checked before any model loads (issue 15 items 5 and 9; BAD_INPUTS row 27):
exit 2, nothing created, for generate, batch and train-clip; --overwrite for an existing PNG."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest
from typer.testing import CliRunner

from clipforge.cli import app
from clipforge.errors import ConfigError
from clipforge.targets import check_file, check_folder

TINY = ["--size", "16", "--steps", "1", "--cutn", "2", "-q"]


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _targets(tmp_path):
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "notes.png").write_text("not a png")
    (tmp_path / "notes.txt").write_text("a file")
    return {
        "existing folder named .png": (tmp_path / "dir.png", "is an existing folder"),
        "name over 255 bytes": (tmp_path / ("a" * 260 + ".png"), "at most 255"),
        "/dev/null": ("/dev/null", "is not a folder"),
        "existing non-PNG named .png": (tmp_path / "notes.png", "is not a .png file"),
        "existing non-PNG file": (tmp_path / "notes.txt", "is not a folder"),
        "a .jpg name": (tmp_path / "red.jpg", "clipforge writes PNG files"),
        "a folder under a file": (tmp_path / "notes.txt" / "x.png", "is not a folder"),
    }


CASES = ["existing folder named .png", "name over 255 bytes", "/dev/null",
         "existing non-PNG named .png", "existing non-PNG file", "a .jpg name",
         "a folder under a file"]


@pytest.mark.parametrize("case", CASES)
def test_generate_refuses_a_bad_target_before_any_model_loads(case, tmp_path):
    target, says = _targets(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    # a CLIP that does not exist: the target's error must come first
    r = _cli("generate", "a red circle", "--clip", tmp_path / "no-clip", "--out", target, *TINY)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: out: ") and says in r.stderr, r.stderr
    assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created
    assert not os.path.exists("/dev/null.png")


def test_read_only_target_is_refused(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # as a read-only mount answers
    with pytest.raises(ConfigError, match="cannot write in .*Read-only file system"):
        check_file(tmp_path / "a.png")
    with pytest.raises(ConfigError, match="cannot write in .*Read-only file system"):
        check_folder(tmp_path / "new" / "sub")


@pytest.mark.skipif(os.access("/sys", os.W_OK) and not os.path.ismount("/sys"),
                    reason="needs /sys mounted (read-only to writes of new files)")
def test_a_real_read_only_mount_is_refused_by_the_cli(tmp_path):
    r = _cli("generate", "x", "--clip", tmp_path / "no-clip", "--out", "/sys/x.png", *TINY)
    assert r.exit_code == 2 and "cannot write in '/sys'" in r.stderr, r.output


def test_second_generate_into_the_same_path_needs_overwrite(tmp_path, tiny_clip_dir):
    out = tmp_path / "a.png"
    args = ["generate", "a red circle", "--clip", tiny_clip_dir, "--out", out, *TINY]
    assert _cli(*args).exit_code == 0
    first = out.read_bytes()
    r = _cli(*args, "--seed", "3")
    assert r.exit_code == 2 and "exists; pass --overwrite" in r.stderr
    assert out.read_bytes() == first
    r = _cli(*args, "--seed", "3", "--overwrite")
    assert r.exit_code == 0 and out.read_bytes() != first


def test_jpg_name_is_refused_not_made_a_folder(tmp_path, tiny_clip_dir):
    r = _cli("generate", "x", "--clip", tiny_clip_dir, "--out", tmp_path / "red.jpg", *TINY)
    assert r.exit_code == 2 and "use '" in r.stderr and not (tmp_path / "red.jpg").exists()


def test_batch_refuses_a_bad_folder_before_starting(tmp_path, tiny_clip_dir):
    lst = tmp_path / "l.txt"
    lst.write_text("a\n")
    for out, says in [("/dev/null", "is not a folder"), (tmp_path / ("b" * 300), "at most 255")]:
        r = _cli("batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY)
        assert r.exit_code == 2 and says in r.stderr, r.output


@pytest.mark.parametrize("out, says", [("/dev/null", "is not a folder"),
                                       ("NOTES", "is not a folder"),
                                       ("LONG", "at most 255")])
def test_train_clip_checks_its_output_before_training(out, says, tmp_path, monkeypatch):
    import clipforge.training.trainer as trainer

    def no_training(*a, **k):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(trainer, "train", no_training)
    (tmp_path / "notes.txt").write_text("x")
    out = {"NOTES": tmp_path / "notes.txt", "LONG": tmp_path / ("c" * 300)}.get(out, out)
    r = _cli("train-clip", "shapes", "--out", out, "--config", "tiny", "--steps", "1")
    assert r.exit_code == 2 and says in r.stderr, r.output
    assert not os.path.exists("/dev/null.ckpt.pt")
