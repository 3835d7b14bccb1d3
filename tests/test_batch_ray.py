"""The Ray backend: a local cluster started here renders like the sequential run.

Skipped when ray is not installed (``pip install 'clipforge[ray]'``). One cluster serves the
whole module: starting Ray costs several seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from clipforge.cli.batch import run_batch  # noqa: E402

@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the tiny models gain nothing from more, and on a shared machine
    OpenMP threads waiting on each other cost 10-20x (conftest restores the count)."""
    import torch

    torch.set_num_threads(1)


OPTIONS = {"clip": None, "size": "16", "steps": 3, "cutn": 2}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(lst: Path, out: Path, clip: Path, ray_address=None, workers=None, seeds="0-1") -> int:
    options = {**OPTIONS, "clip": [str(clip)]}
    return run_batch(lst, out, seeds, None, None, ray_address, workers, False, False, True,
                     options)


def _records(out: Path) -> dict[str, dict]:
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return {r["id"]: {k: v for k, v in r.items() if k != "seconds"} for r in recs}


def test_ray_matches_sequential_and_resumes(cluster, tmp_path, tiny_clip_dir, monkeypatch):
    """The documented --ray command (docs/batch.md) against a sequential run of the same list."""
    from typer.testing import CliRunner

    from clipforge.cli import app
    from test_batch import docs_commands

    (ray_command,) = [c for c in docs_commands() if "--ray" in c]
    monkeypatch.chdir(tmp_path)
    lst = Path(ray_command[2])
    lst.write_text('"a red circle"\n"a blue square"\n"a red circle"\n'
                   '{"prompt": "diverges", "lr": 1e9}\n{"prompt": "bad json"\n')
    seq, par = tmp_path / "seq", tmp_path / ray_command[ray_command.index("--out") + 1]
    assert torch.get_num_threads() == 1  # as in each actor (one CPU slot each)
    assert _run(lst, seq, tiny_clip_dir) == 1  # the last two rows fail
    argv = ray_command[1:] + ["--clip", str(tiny_clip_dir), "--size", "16", "--steps", "3",
                             "--cutn", "2", "--quiet"]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 1, r.output

    names = sorted(p.name for p in seq.glob("*.png"))
    assert len(names) == 6 and names == sorted(p.name for p in par.glob("*.png"))
    for name in names:  # same pixels and metadata: the files are byte-identical
        assert (seq / name).read_bytes() == (par / name).read_bytes(), name
    assert _records(seq) == _records(par)  # the same manifest entries (order aside)
    status = sorted((r["line"], r["status"]) for r in _records(par).values())
    assert status == [(1, "ok")] * 2 + [(2, "ok")] * 2 + [(3, "ok")] * 2 + \
        [(4, "nonfinite")] * 2 + [(5, "failed")]

    # resume works the same: a lost file is rendered again, nothing else
    (par / names[3]).unlink()
    assert _run(lst, par, tiny_clip_dir, ray_address="auto", workers=1) == 1  # failed earlier
    assert (seq / names[3]).read_bytes() == (par / names[3]).read_bytes()
    lines = (par / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[-1])["path"] == names[3]
    assert not list(par.glob(".*"))
