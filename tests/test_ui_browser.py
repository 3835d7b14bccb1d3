"""The studio in a real browser: Debian's chromium driven by Playwright (no browser download).

Loads the page, types a prompt, double-clicks Generate (one job), watches the preview change,
pauses, steers the prompt, resumes, stops and sees the controls return to idle with the last
preview kept; then a bad setting is refused on its field without a job, and a dropped
clipforge PNG restores its settings. A screenshot of the
running studio is saved under the test's tmp dir (and to ``$CLIPFORGE_STUDIO_SCREENSHOT`` when
set, which is how docs/studio.png is made).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio_url(tiny_clip_dir, tmp_path_factory):
    pytest.importorskip("gradio")
    from clipforge.pretrained import ASSETS
    from clipforge.ui.app import launch

    # the bundled model when it is installed (for the docs screenshot), else the tiny test CLIP
    clip = "shapes" if (ASSETS / "shapes").is_dir() and os.environ.get(
        "CLIPFORGE_STUDIO_SCREENSHOT") else str(tiny_clip_dir)
    demo = launch(port=free_port(), default_clip=clip, device="cpu",
                  output_dir=str(tmp_path_factory.mktemp("studio_out")),
                  overrides={"width": 64, "height": 64, "steps": 3000, "cutn": 8,
                             "preview_every": 1},
                  prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1100})
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


def preview_sources(page, n: int, timeout: float = 30.0) -> set[str]:
    """Wait until the preview image has shown ``n`` different images."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        img = page.locator("#cf-preview img")
        if img.count():
            src = img.first.get_attribute("src")
            if src:
                seen.add(src)
        time.sleep(0.1)
    return seen


def test_browser_generate_preview_pause_steer_resume_stop(studio_url, page, tmp_path,
                                                          monkeypatch):
    from playwright.sync_api import expect

    from clipforge.ui import live as engine

    released = []
    real_release = engine.LiveRun.release
    monkeypatch.setattr(engine.LiveRun, "release",
                        lambda self: (released.append(self.i), real_release(self)))
    studio = studio_url.clipforge_studio
    page.goto(studio_url.local_url)
    expect(page.locator("#cf-model-note")).to_be_visible()
    page.locator("#cf-prompt textarea").fill("a red circle on a blue background")
    jobs = studio.jobs_started
    page.locator("#cf-generate").dblclick()
    assert len(preview_sources(page, 3)) >= 3, "the preview did not change twice"
    expect(page.locator("#cf-status")).to_contain_text("running · step")
    shot = tmp_path / "studio.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    if os.environ.get("CLIPFORGE_STUDIO_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["CLIPFORGE_STUDIO_SCREENSHOT"])
    assert studio.jobs_started == jobs + 1, "a double-click must give one job"

    # pause, steer, resume: the same run goes on
    page.locator("#cf-pause").click()
    expect(page.locator("#cf-status")).to_contain_text("paused · step")
    expect(page.locator("#cf-resume")).to_be_visible()
    page.locator("#cf-prompt textarea").fill("a green square:2")
    page.locator("#cf-lr input").fill("0.03")
    page.locator("#cf-resume").click()
    expect(page.locator("#cf-status")).to_contain_text("running · step")
    assert len(preview_sources(page, 2)) >= 2

    # stop: idle controls, last preview kept
    page.locator("#cf-stop").click()
    expect(page.locator("#cf-status")).to_have_text("stopped")
    expect(page.locator("#cf-generate")).to_be_enabled()
    expect(page.locator("#cf-stop")).to_be_disabled()
    expect(page.locator("#cf-resume")).to_be_hidden()
    expect(page.locator("#cf-preview img")).to_have_count(1)
    deadline = time.monotonic() + 20
    while not released and time.monotonic() < deadline:  # the loop's cleanup ran on the server
        time.sleep(0.1)
    assert released and released[0] > 0

    # a bad setting is named on its field and takes no job
    jobs = studio.jobs_started
    page.locator("#cf-steps input").fill("3.5")
    page.locator("#cf-generate").click()
    expect(page.locator("#cf-steps")).to_contain_text("steps: expected a whole number, got 3.5")
    time.sleep(0.5)
    assert studio.jobs_started == jobs

    # dropping a clipforge PNG restores its settings
    import torch

    from clipforge.config import RunConfig
    from clipforge.outputs import save_png

    png = save_png(tmp_path / "restore-me.png", torch.zeros(1, 3, 16, 16),
                   RunConfig(prompt="a blue square:1.5 | noise:-0.5", seed=1234, steps=77,
                             width=48, height=40))
    page.locator("#cf-restore input[type=file]").set_input_files(str(png))
    expect(page.locator("#cf-prompt textarea")).to_have_value("a blue square:1.5 | noise:-0.5")
    expect(page.locator("#cf-seed input")).to_have_value("1234")
    expect(page.locator("#cf-steps input")).to_have_value("77")
    expect(page.locator("#cf-status")).to_contain_text("restored the settings")

    # every registered generator is offered; picking one shows its options
    from clipforge import registry

    page.locator("#cf-generator input").click()
    for name in registry.GENERATORS:
        expect(page.get_by_role("option", name=name, exact=True)).to_be_visible()
    page.get_by_role("option", name="pixel", exact=True).click()
    expect(page.locator("#cf-generator_options")).to_contain_text('"min_size": 4')
