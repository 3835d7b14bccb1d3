"""Batch hardening (issue 15 items 2 and 3; BAD_INPUTS rows 24, 25): a deeply nested line or
PNG fails alone with its line number; a bad shared setting exits 2 before the first item, writes
no manifest line, and a failure that is not the item's fault never poisons its record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from clipforge.cli import app
from clipforge.errors import RunOutOfMemoryError

TINY = ["--size", "16", "--steps", "1", "--cutn", "2", "--quiet"]


@pytest.fixture(autouse=True)
def _one_cache(monkeypatch):
    import clipforge.guidance.clip_models as E

    cache = E.ModelCache()
    monkeypatch.setattr(E, "ModelCache", lambda: cache)


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _records(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_deeply_nested_lines_fail_alone_with_their_line_numbers(tmp_path, tiny_clip_dir):
    lst = tmp_path / "l.jsonl"
    lst.write_text('"a red circle"\n' + "[" * 1500 + "]" * 1500 + "\n"
                   + '{"prompt": ' + '{"a": ' * 1500 + "1" + "}" * 1500 + "}\n"
                   + '{"config": null}\n"a blue square"\n')
    out = tmp_path / "out"
    plan = _cli("batch", lst, "--out", out, "--clip", tiny_clip_dir, "--plan", *TINY)
    assert plan.exit_code == 0 and "Traceback" not in plan.output, plan.output
    assert "invalid line 2: JSON is nested too deeply" in plan.stdout
    assert "invalid line 3: JSON is nested too deeply" in plan.stdout
    assert "plan: 2 to render" in plan.stderr
    r = _cli("batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY)
    assert r.exit_code == 1 and "Traceback" not in r.output
    by_line = {x["line"]: x for x in _records(out)}
    assert by_line[1]["status"] == by_line[5]["status"] == "ok"
    assert [by_line[n]["status"] for n in (2, 3, 4)] == ["failed"] * 3
    assert by_line[2]["error"].startswith("line 2: ") and by_line[4]["error"].startswith("line 4")


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, '{"config": null}',
                                  '{"clipforge_config": 1, "config": null}'])
def test_from_a_png_with_nested_or_null_settings_exits_2(text, tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("clipforge", text)
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png", pnginfo=info)
    r = _cli("generate", "--from", tmp_path / "in.png", "--out", tmp_path / "o.png", *TINY)
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.output


@pytest.mark.parametrize("flags, says", [
    (["--device", "cuda:7"], "device: 'cuda:7'"),
    (["--clip", "nosuchmodel"], "clip 'nosuchmodel': unknown model"),
    (["--generator", "nosuch"], "unknown generator 'nosuch'"),
    (["--init-image", "/nope.png"], "init_image: cannot read image '/nope.png': no such file"),
    (["--generator-options", '{"nosuch": 1}'], "unknown option 'nosuch'"),
    (["--generator-options", '{"min_size": 0}'], "option min_size: 0 is out of range"),
    (["--image-prompt", "/nope.png"], "image_prompts: cannot read image"),
])
def test_bad_shared_setting_exits_2_before_the_first_item(flags, says, tmp_path, tiny_clip_dir):
    lst = tmp_path / "l.txt"
    lst.write_text("a red circle\na blue square\n")
    out = tmp_path / "out"
    args = ["batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY]
    r = _cli(*args, *flags)
    assert r.exit_code == 2, r.output
    assert says in r.stderr and "Traceback" not in r.output
    assert not (out / "manifest.jsonl").exists()
    r = _cli(*args)  # the corrected re-run renders everything
    assert r.exit_code == 0, r.output
    assert "2 rendered" in r.stderr and len(list(out.glob("*.png"))) == 2


def test_a_rows_own_setting_still_fails_only_that_row(tmp_path, tiny_clip_dir):
    lst = tmp_path / "l.jsonl"
    lst.write_text('{"prompt": "a", "init_image": "/nope.png"}\n"b"\n')
    r = _cli("batch", lst, "--out", tmp_path / "out", "--clip", tiny_clip_dir, *TINY)
    assert r.exit_code == 1, r.output
    status = {x["line"]: x["status"] for x in _records(tmp_path / "out")}
    assert status == {1: "failed", 2: "ok"}


def test_a_failure_that_is_not_the_items_fault_is_retried(tmp_path, tiny_clip_dir,
                                                          monkeypatch):
    import clipforge.runner as runner

    real = runner.Run

    class OutOfMemoryRun(real):
        def __iter__(self):
            raise RunOutOfMemoryError("out of memory at step 1 (simulated)")

    lst = tmp_path / "l.txt"
    lst.write_text("a red circle\na blue square\n")
    out = tmp_path / "out"
    monkeypatch.setattr(runner, "Run", OutOfMemoryRun)
    r = _cli("batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY)
    assert r.exit_code == 1 and "2 failed" in r.stderr, r.output
    assert [x["status"] for x in _records(out)] == ["error", "error"]
    monkeypatch.setattr(runner, "Run", real)
    r = _cli("batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY)
    assert r.exit_code == 0 and "2 rendered" in r.stderr and "failed earlier" not in r.stderr
