"""Every BAD_INPUTS.md input that the command line can be given, run through the CLI: each ends
with its documented exit code (2 bad input, 1 runtime failure, 0 accepted) and one line of
error, never a Python traceback (issue 15 acceptance).

Rows 15, 16, 19-21, 26, 32 and 33 are not inputs of a single command (cancelling, killing,
concurrency, the studio): their own tests cover them (test_cli, test_batch, test_ui,
test_batch_concurrency). Each case runs in this process (CliRunner), where an exception that
escaped the error mapper would show as ``result.exception``.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from clipforge.cli import app
from conftest import TINY_CFG, write_tiny_clip

RUN = ["--size", "16", "--steps", "1", "--cutn", "2", "-q", "--clip", "{tiny}"]
G = ["generate"]
CUDA = torch.cuda.is_available()


class _Sentinel:
    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["CLIPFORGE_SENTINEL"]), "ran"))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_clip_dir):
    d = tmp_path_factory.mktemp("bad")
    f = {"tiny": str(tiny_clip_dir), "d": str(d)}
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not an image")
    (d / "folder.png").mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(d / "ok.png")
    (d / "truncated.png").write_bytes((d / "ok.png").read_bytes()[:40])
    os.mkfifo(d / "fifo.png")
    os.environ["CLIPFORGE_SENTINEL"] = str(d / "pwned")
    with open(d / "evil.safetensors", "wb") as fh:
        pickle.dump({"x": _Sentinel()}, fh)
    (d / "corrupt").mkdir()
    (d / "corrupt" / "open_clip_config.json").write_text((tiny_clip_dir /
                                                          "open_clip_config.json").read_text())
    (d / "corrupt" / "open_clip_model.safetensors").write_bytes(b"\x10" * 64)
    wide = {**TINY_CFG, "vision_cfg": {**TINY_CFG["vision_cfg"], "width": 96}}
    write_tiny_clip(d / "wide", cfg=wide)
    mixed = write_tiny_clip(d / "mixed")
    (mixed / "open_clip_model.safetensors").write_bytes(
        (d / "wide" / "open_clip_model.safetensors").read_bytes())
    deep = "[" * 3000 + "]" * 3000
    (d / "lists").mkdir()
    (d / "lists" / "dup.txt").write_text("a red circle\na red circle\n")
    (d / "lists" / "utf8.txt").write_bytes(b"a red circle\n\xff\xfe bad\n")
    (d / "lists" / "badjson.jsonl").write_text('"a"\n{"prompt": \n' + deep + "\n")
    (d / "lists" / "noprompt.csv").write_text("text,seed\na,1\n")
    (d / "lists" / "empty.txt").write_text("")
    (d / "lists" / "l.txt").write_text("a red circle\n")
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("clipforge", deep)
    Image.new("RGB", (8, 8)).save(d / "deep.png", pnginfo=info)
    (d / "notes.txt").write_text("x")
    return f


OUT = ["--out", "{d}/o/{n}.png", "--overwrite"]
CASES = [  # (BAD_INPUTS row, arguments, exit code)
    (1, G + ["", *RUN], 2), (1, G + ["  \t ", *RUN], 2),
    (2, G + ["a red circle " * 8000, *RUN, *OUT], 0),
    (3, G + ["a \x00 b", *RUN], 2), (3, G + ["a \udcff b", *RUN], 2),
    (3, G + ["🦊 שלום e\u0301 a\u200bb\r\n", *RUN, *OUT], 0),
    (4, G + ['Steps: 5, Seed: 1 "q", a:2 | b\\|c', *RUN, *OUT], 0),
    (5, G + ["x", *RUN, "--size", "0"], 2), (5, G + ["x", *RUN, "--size", "-8"], 2),
    (5, G + ["x", *RUN, "--size", "3.5"], 2), (5, G + ["x", *RUN, "--size", "1x100000"], 2),
    (5, G + ["x", *RUN, "--size", "16384x16384"], 2),
    (5, G + ["x", *RUN, "--generator", "vae", "--size", "30"], 2),
    (6, G + ["x", *RUN, "--steps", "-1"], 2), (6, G + ["x", *RUN, "--steps", "1000000000"], 2),
    (6, G + ["x", *RUN, "--steps", "3.5"], 2), (6, G + ["x", *RUN, "--steps", "0", *OUT], 0),
    (7, G + ["x", *RUN, "--lr", "nan"], 2), (7, G + ["x", *RUN, "--lr", "inf"], 2),
    (7, G + ["x", *RUN, "--lr", "0"], 2), (7, G + ["x", *RUN, "--lr", "-1"], 2),
    (7, G + ["x", *RUN, "--lr", "1e6", "--steps", "5", *OUT], 1),
    (8, G + ["x", *RUN, "--seed", "-1", *OUT], 0), (8, G + ["x", *RUN, "--seed", str(2**64)], 2),
    (8, G + ["x", *RUN, "--seed", "abc"], 2),
    *[(9, G + ["x", *RUN, "--init-image", p], 2) for p in
      ["{d}/missing.png", "{d}/folder.png", "{d}/empty.png", "{d}/truncated.png",
       "{d}/text.png", "/dev/zero", "{d}/fifo.png"]],
    (9, G + ["x", *RUN, "--init-image", "{d}/ok.png", *OUT], 0),
    (10, G + ["x", *RUN, "--clip", "NoSuchModel-B-99"], 2),
    (10, G + ["x", *RUN, "--clip", "ViT-B-32:{d}/missing.bin"], 2),
    (10, G + ["x", *RUN, "--clip", "{d}/corrupt"], 2),
    (10, G + ["x", *RUN, "--clip", "ViT-B-32:{d}/evil.safetensors"], 2),
    *([] if CUDA else [(11, G + ["x", *RUN, "--device", "cuda"], 2)]),
    (14, G + ["../../x", *RUN, "--out", "{d}/o/inside"], 0),
    (17, ["batch", "{d}/lists/dup.txt", "--out", "{d}/b/{n}", *RUN], 0),
    (18, ["batch", "{d}/lists/utf8.txt", "--out", "{d}/b/{n}", *RUN], 1),
    (18, ["batch", "{d}/lists/badjson.jsonl", "--out", "{d}/b/{n}", *RUN], 1),
    (18, ["batch", "{d}/lists/noprompt.csv", "--out", "{d}/b/{n}", *RUN], 2),
    (18, ["batch", "{d}/lists/empty.txt", "--out", "{d}/b/{n}", *RUN], 2),
    (23, G + ["x", *RUN, "--generator", "diffusion", "--size", "4096", "--device", "cpu"], 2),
    (24, G + ["--from", "{d}/deep.png", *RUN], 2),
    (25, ["batch", "{d}/lists/l.txt", "--out", "{d}/b/{n}", *RUN, "--clip", "nosuch"], 2),
    (25, ["batch", "{d}/lists/l.txt", "--out", "{d}/b/{n}", *RUN, "--init-image", "/nope"], 2),
    (27, G + ["x", *RUN, "--out", "/dev/null"], 2),
    (27, G + ["x", *RUN, "--out", "{d}/folder.png"], 2),
    (27, G + ["x", *RUN, "--out", "{d}/" + "n" * 300 + ".png"], 2),
    (27, G + ["x", *RUN, "--out", "{d}/notes.txt"], 2),
    (27, ["train-clip", "shapes", "--config", "tiny", "--steps", "1", "--out", "/dev/null"], 2),
    *[(28, G + ["x", *RUN, "--generator-options", o], 2) for o in
      ['{"min_size": 0}', '{"pyramid": "yes"}', '{"min_size": 1.5}', '{"init_std": NaN}']],
    (28, G + ["x", *RUN, "--generator", "diffusion", "--generator-options",
              '{"skip_steps": 10}'], 2),
    (29, G + ["x", *RUN, "--clip", "{d}/mixed"], 2),
    (29, ["convert-vqgan", "{d}/text.png", "{d}/notes.txt", "{d}/vq"], 2),
    (30, G + ["x", *RUN, "--negative-prompt", "n\nNegative prompt: x\nSteps: 9", *OUT], 0),
    (31, ["classify", "{d}/ok.png", "--labels", "a,b", "--template", "{} {}", "--clip",
          "{tiny}"], 2),
    (31, ["score", "{d}/ok.png", "--prompt", "\udcff"], 2),
    (31, G + ["\u200b\u200b", *RUN], 2),
    (34, G + ["x", *RUN, "--clip", "ViT-B-32:laion2b_s34b_b79k"], 2),
]


def test_no_input_in_bad_inputs_gives_a_traceback(files, monkeypatch):
    failures = []
    for n, (row, args, code) in enumerate(CASES):
        argv = [a.replace("{tiny}", files["tiny"]).replace("{d}", files["d"])
                .replace("{n}", str(n)) for a in args]
        r = CliRunner().invoke(app, argv)
        escaped = r.exception is not None and not isinstance(r.exception, SystemExit)
        if r.exit_code != code or escaped or "Traceback" in r.output:
            failures.append(f"row {row} case {n} ({argv[:2]}...): exit {r.exit_code}, "
                            f"wanted {code}; {r.output[-300:]!r} {r.exception!r}")
    assert not failures, "\n".join(failures)
    assert not Path(files["d"], "pwned").exists()  # the malicious pickle never ran


def test_simulated_out_of_memory_and_full_disk_exit_1(files, monkeypatch):
    """Rows 12 and 13: out of memory at step 1; ENOSPC while saving (no partial file)."""
    from clipforge import outputs
    from clipforge.guidance.guide import Guide

    def oom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with monkeypatch.context() as m:
        m.setattr(Guide, "loss", oom)
        r = CliRunner().invoke(app, G + ["x", *[a.replace("{tiny}", files["tiny"]) for a in RUN],
                                         "--out", f"{files['d']}/oom.png"])
    assert r.exit_code == 1 and "out of memory at step 1" in r.stderr, r.output

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs, "atomic_write_bytes", full)
    r = CliRunner().invoke(app, G + ["x", *[a.replace("{tiny}", files["tiny"]) for a in RUN],
                                     "--out", f"{files['d']}/full.png"])
    assert r.exit_code == 1 and "No space left" in r.stderr and "Traceback" not in r.output
    assert not Path(files["d"], "full.png").exists()
