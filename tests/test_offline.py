"""An unreachable hub is found out once, in about a second, and every hub load then fails fast
with the hint about local folders (BAD_INPUTS row 34)."""

import subprocess
import sys
import time

import pytest

from clipforge import offline


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline.forget()
    yield
    offline.forget()


def test_unreachable_endpoint_is_reported_and_probed_once(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    calls = []
    real = offline.socket.create_connection
    monkeypatch.setattr(offline.socket, "create_connection",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    t0 = time.perf_counter()
    reason = offline.offline_reason()
    assert reason and "127.0.0.1 cannot be reached" in reason
    assert offline.offline_reason() == reason and len(calls) == 1  # asked once per process
    assert time.perf_counter() - t0 < offline.PROBE_SECONDS + 0.5


def test_hf_hub_offline_skips_the_probe(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(offline.socket, "create_connection",
                        lambda *a, **k: pytest.fail("probed although HF_HUB_OFFLINE is set"))
    assert offline.offline_reason() == "HF_HUB_OFFLINE is set"


def test_a_reachable_hub_is_left_alone(monkeypatch):
    class Conn:
        def close(self):
            pass

    monkeypatch.setattr(offline.socket, "create_connection", lambda *a, **k: Conn())
    assert offline.before_hub_access() is None


# Loaded into the CLI process below: logs every connection attempt to the (unreachable) hub.
COUNT_CONNECTIONS = """
import os, socket
_connect = socket.socket.connect
def connect(self, address, *a):
    if isinstance(address, tuple) and address[1:2] == (9,):
        with open(os.environ["CONNECT_LOG"], "a") as f:
            f.write(f"{address[0]}:{address[1]}\\n")
    return _connect(self, address, *a)
socket.socket.connect = connect
"""


@pytest.mark.parametrize("args", [
    ["--clip", "ViT-B-32:laion2b_s34b_b79k"],
    ["--generator", "vae", "--generator-options", '{"model": "madebyollin/taesd"}'],
    ["--generator", "diffusion", "--generator-options", '{"model": "google/ddpm-cifar10-32"}'],
])
def test_hub_models_fail_fast_with_the_local_folder_hint(tmp_path, args):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(COUNT_CONNECTIONS)
    log = tmp_path / "connections.log"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(site), "CONNECT_LOG": str(log)}
    r = subprocess.run([sys.executable, "-m", "clipforge", "generate", "x", "--size", "32",
                        "--steps", "1", "-q", *args], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "offline: 127.0.0.1 cannot be reached" in r.stderr and "local" in r.stderr
    # one probe, then huggingface_hub is offline: no retries (without the probe it retries
    # for about half a minute); counted, not timed, so a loaded machine cannot fail it
    assert log.read_text().splitlines() == ["127.0.0.1:9"]
