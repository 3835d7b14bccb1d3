"""`clipforge batch`: prompt lists, deterministic names, manifest, resume, shards, bad input.

Every render uses the tiny random CLIP from conftest at 16 px, 2-3 steps and 2 cutouts, so
an item takes a fraction of a second on the CPU.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipforge import batch as B
from clipforge.batch import runner as R  # where run_sequential looks up render_item
from clipforge.cli import app
from clipforge.config import ConfigError, load_settings, merge
from clipforge.outputs import TMP_SUFFIX, safe_join

TINY = ["--size", "16", "--steps", "2", "--cutn", "2", "--quiet"]


@pytest.fixture(autouse=True)
def _models_loaded_once_per_module(monkeypatch):
    """In-process batches share one ModelCache, as one long-lived worker would: loading the
    tiny CLIP costs more than rendering a 16 px item."""
    import clipforge.guidance.clip_models as E

    global _SHARED
    if _SHARED is None:
        _SHARED = E.ModelCache()
    monkeypatch.setattr(E, "ModelCache", lambda: _SHARED)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the tiny models gain nothing from more, and on a shared machine
    OpenMP threads waiting on each other cost 10-20x (conftest restores the count)."""
    import torch

    torch.set_num_threads(1)


_SHARED = None


def _cli(args, **kw):
    return CliRunner().invoke(app, [str(a) for a in args], **kw)


def _manifest(out: Path) -> list[dict]:
    """Every manifest record; a line torn by a kill (not JSON) is left out, as batch does."""
    lines = []
    for p in sorted(out.glob("manifest*.jsonl")):
        for line in p.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def _ok_counts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in _manifest(out):
        if rec["status"] == "ok":
            counts[rec["id"]] = counts.get(rec["id"], 0) + 1
    return counts


def _pngs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.png"))


# ---------------------------------------------------------------------------------------------
# reading lists (no model needed)


def test_txt_rows_skip_comments_and_blanks_and_number_lines(tmp_path):
    p = tmp_path / "l.txt"
    p.write_bytes(b"\xef\xbb\xbfa fox\n# comment\n\n  a cat  \r\n")
    rows = list(B.read_rows(p))
    assert [(r.index, r.line, r.values) for r in rows] == [
        (0, 1, {"prompt": "a fox"}), (1, 4, {"prompt": "a cat"})]


def test_invalid_utf8_line_fails_that_item_with_its_line_number(tmp_path):
    p = tmp_path / "l.txt"
    p.write_bytes(b"good one\nbad \xff\xfe line\nanother good\n")
    rows = list(B.read_rows(p))
    assert [r.values for r in rows] == [{"prompt": "good one"}, None, {"prompt": "another good"}]
    assert rows[1].error.startswith("line 2: not valid UTF-8")


def test_csv_columns_override_per_row_and_errors_name_the_line(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text('prompt,seed,steps,size,id\n"a fox, at night",7,3,16x8,fox/1\n'
                 "a cat,,,,\n"
                 "a dog,1,three,,\n", encoding="utf-8")
    items = list(B.iter_items(B.read_rows(p), {"seed": 0, "steps": 2, "cutn": 2}, []))
    fox, cat, dog = items
    assert (fox.config.prompt, fox.seed, fox.config.steps, fox.config.size) == \
        ("a fox, at night", 7, 3, (16, 8))
    assert fox.label == "fox/1" and "/" not in fox.key and fox.key.startswith("000000-fox-1-s7-")
    assert (cat.seed, cat.config.steps) == (0, 2)
    assert dog.config is None and dog.error.startswith("line 4: steps:") and "three" in dog.error


def test_csv_multiline_field_keeps_line_numbers(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text('prompt\n"two\nlines"\nnext\n', encoding="utf-8")
    assert [(r.line, r.values["prompt"]) for r in B.read_rows(p)] == [(2, "two\nlines"),
                                                                       (4, "next")]


@pytest.mark.parametrize("text, message", [
    ("text,seed\na fox,1\n", "no 'prompt' column"),
    ("", "is empty"),
    ("prompt,colour\na fox,red\n", "unknown column 'colour'"),
])
def test_bad_csv_header_raises_before_any_row(tmp_path, text, message):
    p = tmp_path / "l.csv"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        next(B.read_rows(p))


def test_jsonl_bad_line_fails_that_item_only(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text('{"prompt": "a fox", "seed": 3}\n{"prompt": "broken"\n[1, 2]\n'
                 '{"prompt": "x", "colour": 1}\n"just a prompt"\n')
    items = list(B.iter_items(B.read_rows(p), {"steps": 2}, []))
    assert items[0].seed == 3 and items[0].error is None
    assert items[1].error.startswith("line 2: not valid JSON")
    assert items[2].error.startswith("line 3: expected a JSON object")
    assert items[3].error.startswith("line 4: colour: unknown setting")
    assert items[4].config.prompt == "just a prompt"
    assert len({i.key for i in items}) == 5


def test_duplicate_prompts_give_distinct_files(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("same\nsame\nsame\n")
    items = list(B.iter_items(B.read_rows(p), {"seed": 0}, [0, 1]))
    assert len(items) == 6 and len({i.filename for i in items}) == 6


def test_names_are_ascii_short_and_stay_inside_the_folder(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text(json.dumps({"prompt": "../../x"}) + "\n"
                 + json.dumps({"prompt": "🦊 renard ‮ /etc/passwd " + "x" * 5000, "id": "../a/b"})
                 + "\n")
    for item in B.iter_items(B.read_rows(p), {"seed": 0}, [5]):
        name = item.filename
        assert name.isascii() and "/" not in name and ".." not in name
        assert len(name.encode()) < 100
        assert safe_join(tmp_path, name).parent == tmp_path.resolve()


def test_name_changes_with_settings_but_not_with_device():
    from clipforge.config import RunConfig

    cfg = RunConfig(prompt="a fox", steps=5)
    assert B.item_key(0, cfg) == B.item_key(0, cfg.replace(device="cpu", save_every=2))
    assert B.item_key(0, cfg) != B.item_key(0, cfg.replace(steps=6))


@pytest.mark.parametrize("text, seeds", [("0-3", [0, 1, 2, 3]), ("5", [5]),
                                         ("1,3-4,1", [1, 3, 4])])
def test_parse_seeds(text, seeds):
    assert B.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["3-1", "a", "-1", "0-", str(2**63)])
def test_parse_seeds_rejects(text):
    with pytest.raises(ConfigError, match="seeds"):
        B.parse_seeds(text)


@pytest.mark.parametrize("text", ["4/4", "1/0", "x", "-1/3"])
def test_parse_shard_rejects(text):
    with pytest.raises(ConfigError, match="shard"):
        B.parse_shard(text)


def test_shards_partition_the_items(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("".join(f"prompt {i}\n" for i in range(7)))
    every = [i.key for i in B.iter_items(B.read_rows(p), {}, [0, 1, 2])]
    parts = [[i.key for i in B.iter_items(B.read_rows(p), {}, [0, 1, 2], (k, 4))]
             for k in range(4)]
    assert sorted(sum(parts, [])) == sorted(every) and len(every) == 21
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


# ---------------------------------------------------------------------------------------------
# usage errors: exit 2 before starting


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", "", "has no prompts"),
    ("comments.txt", "# only a comment\n\n", "has no prompts"),
    ("l.csv", "text\na fox\n", "no 'prompt' column"),
    ("l.csv", "", "is empty"),
    ("l.yaml", "a fox\n", "unknown list format"),
])
def test_unusable_list_exits_2_before_starting(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_text(content)
    r = _cli(["batch", p, "--out", tmp_path / "out", *TINY])
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "9-1"], "seeds"), (["--shard", "2/2"], "shard"),
    (["--steps", "-1"], "steps"), (["--seed", "-1"], "seed"),
    (["--workers", "2"], "--workers needs --ray"), (["--seed", "1", "--seeds", "1"], "not both"),
])
def test_bad_options_exit_2(tmp_path, extra, message):
    p = tmp_path / "l.txt"
    p.write_text("a fox\n")
    r = _cli(["batch", p, "--out", tmp_path / "out", *TINY, *extra])
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_config_file_then_flags_then_rows(tmp_path):
    (tmp_path / "base.toml").write_text('steps = 9\ncutn = 3\nsize = "16x8"\n')
    (tmp_path / "l.csv").write_text("prompt,steps\na,\nb,4\n")
    base = merge(load_settings(tmp_path / "base.toml"), {"cutn": 2})
    a, b = B.iter_items(B.read_rows(tmp_path / "l.csv"), base, [])
    assert (a.config.steps, a.config.cutn, a.config.size) == (9, 2, (16, 8))
    assert b.config.steps == 4
    (tmp_path / "bad.json").write_text('{"steps": 0.5}')
    with pytest.raises(ConfigError, match="steps"):
        merge(load_settings(tmp_path / "bad.json"), {})


# ---------------------------------------------------------------------------------------------
# running batches in this process


def test_batch_renders_resumes_and_loads_models_once(tmp_path, tiny_clip_dir, monkeypatch):
    import clipforge.guidance.clip_models as E

    monkeypatch.setattr(E, "ModelCache", type(_SHARED))  # a fresh cache per batch here
    loads = []
    real = E.load_embedder
    monkeypatch.setattr(E, "load_embedder", lambda *a, **k: loads.append(a) or real(*a, **k))
    lst = tmp_path / "l.txt"
    lst.write_text("a red circle\na red circle\n../../x\n")
    out = tmp_path / "out"
    args = ["batch", lst, "--out", out, "--clip", tiny_clip_dir, "--seeds", "0-1", *TINY]
    r = _cli(args)
    assert r.exit_code == 0, r.output
    assert len(loads) == 1  # one ModelCache for the whole batch
    names = _pngs(out)
    assert len(names) == 6 and all(n.isascii() for n in names)
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.parent.glob("x*.png"))
    recs = _manifest(out)
    assert {r["status"] for r in recs} == {"ok"} and len(recs) == 6
    assert {r["path"] for r in recs} == set(names)
    assert set(recs[0]) >= {"id", "prompt", "seed", "settings", "status", "error", "path",
                            "seconds"}
    assert "6 rendered, 0 skipped" in r.stderr
    mtimes = {n: (out / n).stat().st_mtime_ns for n in names}

    # killed between a rename and its manifest line, the last line torn by the kill
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:-1]) + lines[-1][:25])
    # a re-run renders nothing, loads no model, reads no finished image, and a grown seed
    # range renders only the new
    import PIL.Image

    def no_reading(*a, **k):
        raise AssertionError("a finished output was read back")

    with monkeypatch.context() as m:
        m.setattr(PIL.Image, "open", no_reading)
        r = _cli(args)
    assert r.exit_code == 0 and "0 rendered, 6 skipped" in r.stderr and len(loads) == 1
    assert "1 finished file(s) added to the manifest" in r.stderr
    assert json.loads(manifest.read_text().splitlines()[-1])["recovered"] is True
    r = _cli(["batch", lst, "--out", out, "--clip", tiny_clip_dir, "--seeds", "0-2", *TINY])
    assert r.exit_code == 0 and "3 rendered, 6 skipped" in r.stderr
    assert {n: (out / n).stat().st_mtime_ns for n in names} == mtimes
    assert set(_ok_counts(out).values()) == {1} and len(_ok_counts(out)) == 9


def test_failing_items_do_not_stop_the_rest_and_retry_on_request(tmp_path, tiny_clip_dir):
    lst = tmp_path / "l.jsonl"
    lst.write_bytes(b'{"prompt": "a fox"}\n{"prompt": "a fox", "size": "0"}\n'
                    b'{"prompt": "bad \xff"}\n{"prompt": "a cat", "lr": 1e9}\n'
                    b'{"prompt": "a dog"}\n')
    out = tmp_path / "out"
    args = ["batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY]
    r = _cli(args)
    assert r.exit_code == 1, r.output
    by_line = {rec["line"]: rec for rec in _manifest(out)}
    assert by_line[1]["status"] == by_line[5]["status"] == "ok"
    assert by_line[2]["status"] == "failed" and by_line[2]["error"].startswith("line 2: ")
    assert by_line[3]["status"] == "failed" and "line 3: not valid UTF-8" in by_line[3]["error"]
    assert by_line[4]["status"] == "nonfinite" and "diverged" in by_line[4]["error"]
    assert len(_pngs(out)) == 2
    assert "2 rendered, 0 skipped (already done), 3 failed" in r.stderr

    r = _cli(args)  # failures are remembered, not retried
    assert r.exit_code == 1 and "0 rendered" in r.stderr and "3 failed earlier" in r.stderr
    assert len(_manifest(out)) == 5
    r = _cli(args + ["--retry-failed"])
    assert r.exit_code == 1 and "3 failed" in r.stderr and len(_manifest(out)) == 8


def test_disk_full_stops_the_batch_and_is_recorded(tmp_path, tiny_clip_dir, monkeypatch):
    import clipforge.outputs as O

    real = O.atomic_write_bytes
    calls = []

    def full_after_one(path, data):
        calls.append(path)
        if len(calls) > 1:
            with O.atomic_path(path) as tmp:
                tmp.write_bytes(data[:10])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)

    monkeypatch.setattr(O, "atomic_write_bytes", full_after_one)
    lst = tmp_path / "l.txt"
    lst.write_text("one\ntwo\nthree\n")
    out = tmp_path / "out"
    r = _cli(["batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY])
    assert r.exit_code == 1, r.output
    assert "No space left on device" in r.stderr and "batch stopped" in r.stderr
    assert len(calls) == 2 and len(_pngs(out)) == 1  # the third item never started
    assert not list(out.glob(f"*{TMP_SUFFIX}"))
    last = _manifest(out)[-1]
    assert last["status"] == "interrupted" and "No space left on device" in last["error"]
    monkeypatch.setattr(O, "atomic_write_bytes", real)
    r = _cli(["batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY])
    assert r.exit_code == 0 and "2 rendered, 1 skipped" in r.stderr


def test_ctrl_c_records_the_item_and_exits_130(tmp_path, tiny_clip_dir, monkeypatch):
    real = B.render_item
    calls = []

    def interrupt_second(cfg, cache, on_step=None):
        calls.append(cfg.prompt)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, cache, on_step)

    monkeypatch.setattr(R, "render_item", interrupt_second)
    lst = tmp_path / "l.txt"
    lst.write_text("one\ntwo\nthree\n")
    out = tmp_path / "out"
    r = _cli(["batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY])
    assert r.exit_code == 130, r.output
    recs = _manifest(out)
    assert [(x["prompt"], x["status"]) for x in recs] == [("one", "ok"), ("two", "interrupted")]
    monkeypatch.setattr(R, "render_item", real)
    r = _cli(["batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY])
    assert r.exit_code == 0 and "2 rendered, 1 skipped" in r.stderr


# runs the CLI in a fresh interpreter, then reports seconds, peak RSS (KiB, VmHWM: unlike
# ru_maxrss it does not inherit the parent's peak across fork + exec) and whether torch was
# imported, on the last line of stderr
_MEASURE = ("import sys, time\nt = time.perf_counter()\nfrom clipforge.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    rc = e.code\n"
            "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
            "print(f'{time.perf_counter() - t:.2f} {hwm[0]} '\n"
            "      f'{\"torch\" in sys.modules}', file=sys.stderr)\nsys.exit(rc)")


def _measured(args):
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, args)],
                          capture_output=True, text=True)
    seconds, rss_kb, torch_loaded = proc.stderr.strip().splitlines()[-1].split()
    return proc, float(seconds), int(rss_kb), torch_loaded == "True"


def test_plan_lists_without_loading_models(tmp_path, tiny_clip_dir):
    lst = tmp_path / "l.csv"
    lst.write_text("prompt,steps\na fox,\na cat,x\n")
    out = tmp_path / "out"
    r = _cli(["batch", lst, "--out", out, "--clip", tiny_clip_dir, "--seeds", "0-1", *TINY])
    assert r.exit_code == 1
    lst.write_text("prompt,steps\na fox,\na cat,x\nnew,\n")
    proc, _, _, torch_loaded = _measured(["batch", lst, "--out", out, "--clip", tiny_clip_dir,
                                          "--seeds", "0-1", "--plan", *TINY])
    assert proc.returncode == 0, proc.stderr
    assert not torch_loaded
    lines = proc.stdout.splitlines()
    assert sum(x.startswith("skip") and "(done)" in x for x in lines) == 2
    assert sum(x.startswith("skip") and "failed earlier" in x for x in lines) == 1
    assert sum(x.startswith("render") for x in lines) == 2
    assert "plan: 2 to render, 2 done, 1 failed earlier, 0 invalid" in proc.stderr


def test_plan_of_100k_lines_streams_in_constant_memory(tmp_path):
    """BAD_INPUTS 22: measured; the numbers are printed for the report (pytest -s)."""
    lst = tmp_path / "big.txt"
    with open(lst, "w") as f:
        for i in range(100_000):
            f.write(f"prompt number {i} with a few words\n")
    proc, seconds, rss_kb, torch_loaded = _measured(
        ["batch", lst, "--out", tmp_path / "out", "--plan", "--steps", "2"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("\n") == 100_000
    print(f"\n--plan over 100,000 lines: {seconds:.2f} s, peak RSS {rss_kb / 1024:.0f} MiB")
    assert not torch_loaded
    # a list 100x shorter peaks at the same memory: nothing grows with the list
    small = tmp_path / "small.txt"
    small.write_text("".join(f"prompt number {i} with a few words\n" for i in range(1_000)))
    _, _, rss_small_kb, _ = _measured(["batch", small, "--out", tmp_path / "out", "--plan"])
    print(f"--plan over 1,000 lines: peak RSS {rss_small_kb / 1024:.0f} MiB")
    assert rss_kb < rss_small_kb + 8 * 1024


def test_sigterm_records_the_item_and_exits_130(tmp_path, tiny_clip_dir, monkeypatch):
    real = B.render_item

    def terminate_on_second(cfg, cache, on_step=None):
        if cfg.prompt == "two":
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or Slurm's time limit would
            time.sleep(5)  # the handler interrupts this
        return real(cfg, cache, on_step)

    monkeypatch.setattr(R, "render_item", terminate_on_second)
    lst = tmp_path / "l.txt"
    lst.write_text("one\ntwo\nthree\n")
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    r = _cli(["batch", lst, "--out", out, "--clip", tiny_clip_dir, *TINY])
    assert r.exit_code == 130, r.output
    assert time.monotonic() - t0 < 60 and "re-run the same command to resume" in r.stderr
    assert [(x["prompt"], x["status"]) for x in _manifest(out)] == [("one", "ok"),
                                                                    ("two", "interrupted")]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


# ---------------------------------------------------------------------------------------------
# processes: SIGTERM, kill -9, shards


def _spawn(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "clipforge.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_ok(out: Path, n: int, proc, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if out.is_dir() and sum(_ok_counts(out).values()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"batch ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("batch made no progress")


def test_kill_9_mid_batch_then_rerun_renders_each_item_exactly_once(tmp_path, tiny_clip_dir):
    lst = tmp_path / "l.txt"
    lst.write_text("".join(f"shape {i}\n" for i in range(6)))
    out = tmp_path / "out"
    args = ["batch", lst, "--out", out, "--clip", tiny_clip_dir, "--size", "16", "--steps",
            "10", "--cutn", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    proc = _spawn(args, env=env)
    _wait_for_ok(out, 2, proc)
    proc.kill()  # SIGKILL: no cleanup at all
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= len(_pngs(out)) < 6
    (out / f".000004-shape-4-s0-deadbeef.png.x1y2z3{TMP_SUFFIX}").write_bytes(b"partial")

    proc = _spawn(args, env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(_pngs(out)) == 6
    counts = _ok_counts(out)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts
    assert sorted(f"{k}.png" for k in counts) == _pngs(out)
    assert not list(out.glob(f"*{TMP_SUFFIX}"))
    from PIL import Image

    for name in _pngs(out):
        with Image.open(out / name) as im:
            im.load()
            assert im.size == (16, 16)


def test_shards_render_the_whole_list_exactly_once(tmp_path, tiny_clip_dir):
    lst = tmp_path / "l.txt"
    lst.write_text("a\nb\nc\n")
    out = tmp_path / "out"
    for k in range(3):
        r = _cli(["batch", lst, "--out", out, "--clip", tiny_clip_dir, "--seeds", "0-1",
                  "--shard", f"{k}/3", *TINY[:-1]])  # with progress bars (on stderr)
        assert r.exit_code == 0, r.output
        assert (out / f"manifest.shard-{k}-of-3.jsonl").is_file()
        assert "batch" in r.stderr and "2/2" in r.stderr and not r.stdout
    counts = _ok_counts(out)
    assert len(_pngs(out)) == 6 and len(counts) == 6 and set(counts.values()) == {1}
    r = _cli(["batch", lst, "--out", out, "--clip", tiny_clip_dir, "--seeds", "0-1", *TINY])
    assert r.exit_code == 0 and "0 rendered, 6 skipped" in r.stderr


def test_shard_sweep_leaves_other_shards_temp_files(tmp_path):
    a = tmp_path / f".000001-a-s0-0123abcd.png.q{TMP_SUFFIX}"   # (1 + 0) % 2 == 1
    b = tmp_path / f".000002-b-s0-0123abcd.png.q{TMP_SUFFIX}"   # (2 + 0) % 2 == 0
    a.write_bytes(b"")
    b.write_bytes(b"")
    assert B.sweep_shard_temp_files(tmp_path, (0, 2)) == 1
    assert a.exists() and not b.exists()


def test_missing_ray_gives_the_install_command_before_starting(tmp_path, monkeypatch):
    lst = tmp_path / "l.txt"
    lst.write_text("a fox\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    r = _cli(["batch", lst, "--out", tmp_path / "out", "--ray", "auto", *TINY])
    assert r.exit_code == 2 and "pip install 'clipforge[ray]'" in r.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# the README section (docs/batch.md): every command in it runs here (tiny settings appended;
# the last value of a flag wins), except `sbatch` (the job script runs in the next test) and
# the `--ray` command (tests/test_batch_ray.py runs it on its cluster)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "batch.md"


def docs_commands() -> list[list[str]]:
    import re
    import shlex

    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines()
            if line.startswith("clipforge ")]


def tiny(argv: list[str], clip: Path) -> list[str]:
    """A documented command with tiny settings appended (they override the documented ones)."""
    extra = ["--clip", str(clip), "--size", "16", "--steps", "4", "--cutn", "2", "--quiet"]
    if "--checkpoint-every" in argv:
        extra += ["--checkpoint-every", "2"]
    return argv[1:] + extra


def test_docs_commands_run(tmp_path, tiny_clip_dir, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Path("prompts.txt").write_text("# a comment\na lighthouse in fog\n")
    Path("prompts.csv").write_text('prompt,seed,steps,size\n"a lighthouse in fog, at dusk",7,,\n'
                                   "a red fox,,3,16x8\n")
    Path("base.toml").write_text('steps = 300\nsize = "256"\ncutn = 32\nclip = ["shapes"]\n')
    Path("prompts.jsonl").write_text('{"prompt": "a fox", "init_image": "start.png"}\n'
                                     '"a red circle"\n')
    commands = docs_commands()
    assert len(commands) >= 7
    codes = {}
    for argv in commands:
        if "--ray" in argv:
            continue
        if "--retry-failed" in argv:  # first a run that fails: the init image is missing
            r = _cli(tiny([a for a in argv if a != "--retry-failed"], tiny_clip_dir))
            failed = [x for x in _manifest(Path("renders")) if x["status"] == "failed"]
            assert r.exit_code == 1 and "start.png" in failed[0]["error"], r.output
            Image.new("RGB", (16, 16), (200, 40, 30)).save("start.png")
        r = _cli(tiny(argv, tiny_clip_dir))
        codes[" ".join(argv)] = r.exit_code
        assert r.exit_code == 0, (argv, r.output)
    renders = Path("renders")
    assert len(_pngs(renders)) == 4 + 2 + 2
    assert sorted(_ok_counts(renders).values()) == [1] * 8
    assert Path("fox.png").is_file() and Path("fox.ckpt").is_file()


def test_sbatch_array_script_covers_the_list_once(tmp_path):
    script = Path(__file__).resolve().parent.parent / "examples" / "sbatch_array.sh"
    lst = tmp_path / "prompts.txt"
    lst.write_text("".join(f"prompt {i}\n" for i in range(5)))
    planned = []
    for task in (1, 2, 3):  # as `sbatch --array=1-3`
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": "1",
               "SLURM_ARRAY_TASK_COUNT": "3", "CLIPFORGE": str(Path(sys.executable).parent /
                                                               "clipforge")}
        proc = subprocess.run(["bash", str(script), str(lst), str(tmp_path / "renders"),
                               "--seeds", "0-1", "--plan"], env=env, capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
        planned += [line.split()[1] for line in proc.stdout.splitlines()]
    assert len(planned) == 10 and len(set(planned)) == 10
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr
