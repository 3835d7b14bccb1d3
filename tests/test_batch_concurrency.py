"""Many workers, one folder (issue 15 item 4; BAD_INPUTS row 26): batch processes, a Ray run
and a killed worker share an output folder; every item is rendered and recorded ok exactly once,
and no temp or lock file is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from clipforge.batch.claims import Claims, lock_name

ROOT = Path(__file__).resolve().parent.parent

# a batch process whose items each take 1-2 s longer (seeded by its index), so that the
# workers overlap; otherwise the real CLI
_SLOW = ("import random, sys, time\nrandom.seed(int(sys.argv.pop(1)))\n"
         "import clipforge.batch.runner as R\nreal = R.render_item\n"
         "def slow(*a, **k):\n    time.sleep(1 + random.random())\n    return real(*a, **k)\n"
         "R.render_item = slow\nfrom clipforge.cli import main\nsys.argv[0] = 'clipforge'\n"
         "main()\n")
_HOLD = ("import sys, time\nfrom clipforge.batch.claims import Claims\n"
         "c = Claims(sys.argv[1])\nprint(c.take(sys.argv[2]), flush=True)\ntime.sleep(60)\n")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_a_claim_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path), "k"], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        mine = Claims(tmp_path)
        assert not mine.take("k") and mine.held_elsewhere("k")
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert not mine.held_elsewhere("k")  # the kernel dropped the lock; its file is swept
        assert not (tmp_path / lock_name("k")).exists()
        assert mine.take("k") and (tmp_path / lock_name("k")).exists()
        mine.release("k")
        assert not (tmp_path / lock_name("k")).exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_three_processes_a_ray_run_and_a_killed_worker_render_each_item_once(
        tmp_path, tiny_clip_dir):
    ray = pytest.importorskip("ray")
    from clipforge.cli.batch import run_batch

    lst = tmp_path / "l.txt"
    lst.write_text("".join(f"a red circle number {i}\n" for i in range(12)))
    out = tmp_path / "out"
    flags = ["--clip", str(tiny_clip_dir), "--size", "16", "--steps", "3", "--cutn", "2", "-q"]
    options = {"clip": [str(tiny_clip_dir)], "size": "16", "steps": 3, "cutn": 2}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_code: list[int] = []
    try:
        ray_run = threading.Thread(target=lambda: ray_code.append(run_batch(
            lst, out, None, None, None, "auto", 2, False, False, True, options)))
        ray_run.start()
        procs = [subprocess.Popen([sys.executable, "-c", _SLOW, str(k), "batch", str(lst),
                                   "--out", str(out), *flags], env=_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for k in range(3)]
        deadline = time.monotonic() + 300
        while not list(out.glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.2)
        procs[0].send_signal(signal.SIGKILL)  # the fault: a worker killed mid-batch
        codes = [p.wait(timeout=600) for p in procs]
        ray_run.join(timeout=600)
    finally:
        ray.shutdown()
    logs = [p.stderr.read() for p in procs]
    print("\n".join(line for log in logs for line in log.splitlines() if "batch:" in line))
    assert codes[0] == -signal.SIGKILL and codes[1:] == [0, 0], logs
    assert ray_code == [0]
    # the killed worker's item, if it was cut short, is rendered by a re-run; nothing else is
    rerun = subprocess.run([sys.executable, "-m", "clipforge", "batch", str(lst), "--out",
                            str(out), *flags], env=_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr

    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    ok = Counter(r["id"] for r in records if r["status"] == "ok")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 12 and sorted(f"{k}.png" for k in ok) == pngs
    assert set(ok.values()) == {1}, ok  # every item ok exactly once
    assert all(r["status"] in ("ok", "interrupted") for r in records)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp or lock file
