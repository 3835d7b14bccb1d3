"""The studio's artist features through its HTTP API (gradio_client) and its engine (issue 14's
features, issue 16 point 4): batch count, the progress video read back by ffmpeg, PNG Info's
reading of clipforge and A1111 PNGs, the starting values from the bundled guide's recommended
settings, the measured time estimate, and uploads that one session cannot use from another."""

from __future__ import annotations

import socket

import pytest
import torch

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError, ValidationError  # noqa: E402

from clipforge.config import RunConfig  # noqa: E402
from clipforge.outputs import read_config, save_png  # noqa: E402

SMALL = {"width": 32, "height": 32, "steps": 6, "cutn": 2, "preview_every": 2}
A1111_TEXT = ("a red circle, masterpiece\nNegative prompt: a blue square\nSteps: 3, Sampler: "
              "Euler a, CFG scale: 7, Seed: 1234, Size: 40x32, Model: v1-5-pruned-emaonly")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tiny_clip_dir, tmp_path_factory):
    from clipforge.ui.app import launch

    demo = launch(port=free_port(), default_clip=str(tiny_clip_dir), device="cpu",
                  max_steps=100, output_dir=str(tmp_path_factory.mktemp("studio_out")),
                  overrides=SMALL, prevent_thread_lock=True, quiet=True)
    demo.clipforge_studio.min_preview_seconds = 0.0
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    return Client(app.local_url, verbose=False)


def args(**over):
    kw = {"prompt": "a red circle", "init_image": None, "image_prompts": None}
    kw.update(over)
    return kw


def a1111_png(path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)  # tEXt, as A1111 writes it
    Image.new("RGB", (40, 32), (200, 30, 30)).save(path, pnginfo=info)
    return path


def test_batch_count_makes_n_images_with_consecutive_seeds(client, app):
    job = client.submit(api_name="/generate", **args(seed=-1, batch_count=3))
    result = job.result(timeout=120)
    gallery, last_png, status = result[3], result[4], result[2]
    assert len(gallery) == 3
    seeds = sorted(read_config(item["image"]).seed for item in gallery)
    k = seeds[0]
    assert seeds == [k, k + 1, k + 2]                      # seeds k..k+N-1, k drawn for -1
    assert read_config(last_png).seed == k + 2 and f"seed {k + 2}" in status
    assert "image 3 of 3" in status and "image 3 of 3" in result[6]  # status and progress bar
    statuses = [o[2] for o in job.outputs() if isinstance(o[2], str)]
    assert any("image 1 of 3" in s for s in statuses) and any("image 2 of 3" in s
                                                              for s in statuses)
    files = sorted(app.clipforge_studio.output_dir.glob(f"clipforge-*-s{k + 1}.png"))
    assert len(files) == 1 and read_config(files[0]).to_dict() == RunConfig.from_dict(
        {**read_config(last_png).to_dict(), "seed": k + 1}).to_dict()  # its own settings


@pytest.mark.parametrize("over,message", [
    ({"batch_count": 17}, "batch_count: 17 is not allowed; allowed: whole numbers 1..16"),
    ({"batch_count": 0}, "batch_count: 0 is not allowed"),
    ({"batch_count": 20, "steps": 6}, "batch_count: 20"),
    ({"batch_count": 5, "steps": 30}, "5 images of 30 steps are 150 steps; this studio allows "
                                      "100 per Generate"),
])
def test_batch_count_is_checked_before_a_job(client, app, over, message):
    before = app.clipforge_studio.jobs_started
    with pytest.raises(ValidationError, match=message):
        client.predict(api_name="/generate", **args(**over))
    assert app.clipforge_studio.jobs_started == before


def test_cancelling_a_batch_job_makes_no_more_images(client, app, monkeypatch):
    """One Generate is one job: cancelling it (gradio's cancel, as the page's Stop of an API
    job) ends the whole batch, and the model is free for the next job."""
    import time

    from clipforge.ui import live

    real = live.LiveRun.steps

    def slow_steps(self):  # steps the test can catch mid-batch on any machine
        for step in real(self):
            time.sleep(0.05)
            yield step

    monkeypatch.setattr(live.LiveRun, "steps", slow_steps)
    out = app.clipforge_studio.output_dir
    job = client.submit(api_name="/generate", **args(seed=900, steps=30, batch_count=3))
    deadline = time.monotonic() + 60
    while not any("running · step" in str(o[2]) for o in job.outputs()) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    time.sleep(3.0)  # long enough for the rest of the batch to start, were it going to
    assert not list(out.glob("clipforge-*-s90[12]*.png"))
    monkeypatch.undo()
    done = client.predict(api_name="/generate", **args(seed=910))
    assert read_config(done[4]).seed == 910


def _probe(path):
    """(metadata, frame count) of a video, decoded by ffmpeg itself."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, sum(1 for _ in reader)


def test_progress_video_is_written_and_decodes(client):
    pytest.importorskip("imageio_ffmpeg")
    result = client.predict(api_name="/generate", **args(save_video=True, steps=8,
                                                         preview_every=2, width=48, height=32))
    video = result[7]
    assert video and str(video).endswith(".mp4")
    meta, frames = _probe(video)
    assert meta["codec"] == "h264" and meta["size"] == (48, 32)
    assert frames == 4                                   # steps 2, 4, 6, 8
    saved = read_config(result[4])
    assert (saved.save_video, saved.save_every) == (True, 2)
    plain = client.predict(api_name="/generate", **args())
    assert not plain[7]                                  # no video unless asked for


def test_png_info_reads_ours_and_a1111(tmp_path):
    from clipforge.ui.inputs import RESTORABLE
    from clipforge.ui.pnginfo import control_values, read_info

    info = read_info(a1111_png(tmp_path / "a1111.png"))
    assert info.source == "A1111" and "Sampler: Euler a" in info.text()
    assert {k: info.settings[k] for k in ("prompt", "negative_prompt", "steps", "seed", "width",
                                          "height")} == {
        "prompt": "a red circle, masterpiece", "negative_prompt": "a blue square", "steps": 3,
        "seed": 1234, "width": 40, "height": 32}
    assert "not used here: Sampler, CFG scale, Model" in info.describe()
    values = control_values(info, RESTORABLE)
    assert set(values) == {"prompt", "negative_prompt", "steps", "seed", "width", "height"}
    cfg = RunConfig(prompt="a fox:1.5", seed=42, width=48, height=40,
                    generator_options={"min_size": 8})
    ours = read_info(save_png(tmp_path / "ours.png", torch.zeros(1, 3, 40, 48), cfg))
    assert ours.source == "clipforge" and "clipforge:" in ours.text()
    values = control_values(ours, RESTORABLE)
    assert (values["prompt"], values["seed"], values["generator_options"], values["clip"]) == (
        "a fox:1.5", 42, '{"min_size": 8}', list(cfg.clip))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    bad = read_info(tmp_path / "bad.png")
    assert not bad.readable and not bad.settings and "cannot read image" in bad.describe()
    from PIL import Image

    Image.new("1", (5000, 4000)).save(tmp_path / "huge.png")  # 20 Mpx in a few kB
    huge = read_info(tmp_path / "huge.png")
    assert not huge.readable and "larger than the studio's" in huge.describe()


def test_starting_values_are_the_bundled_guides_recommended_settings(monkeypatch):
    """Read through ``recommended()``: whatever the table says is where the studio starts."""
    from clipforge import pretrained
    from clipforge.ui.app import build_demo
    from clipforge.ui.inputs import UI_FIELDS, ui_defaults

    if not pretrained.BUNDLED["shapes"].present:
        pytest.skip("the bundled shapes model is not installed")
    real = pretrained.recommended(["shapes"], "pixel")
    initial = build_demo(default_clip="shapes").clipforge_initial
    defaults = ui_defaults()
    for name in UI_FIELDS:
        if name != "clip":
            assert initial[name] == real.get(name, defaults[name]), name
    asked = []
    monkeypatch.setattr(pretrained, "recommended", lambda clip, generator: asked.append(
        (list(clip), generator)) or {"width": 48, "height": 40, "steps": 7, "cutn": 3,
                                     "precision": "fp32"})
    initial = build_demo(default_clip="shapes").clipforge_initial
    assert asked == [(["shapes"], "pixel")]
    assert (initial["width"], initial["height"], initial["steps"], initial["cutn"]) == (
        48, 40, 7, 3)
    assert initial["precision"] == defaults["precision"]  # not a page setting: applied at run
    over = build_demo(default_clip="shapes", overrides={"steps": 9}).clipforge_initial
    assert over["steps"] == 9                            # the operator's overrides win


def test_the_run_uses_the_guides_recommended_precision(tiny_clip_dir, monkeypatch, tmp_path):
    from clipforge import pretrained
    from clipforge.ui.inputs import ui_defaults
    from clipforge.ui.session import Studio

    studio = Studio(default_clip=str(tiny_clip_dir), device="cpu", output_dir=tmp_path)
    values = {**ui_defaults({**SMALL, "clip": studio.default_clip}), "prompt": "a circle"}
    assert studio.config_from_values(values)[0].precision == "auto"
    monkeypatch.setattr(pretrained, "recommended", lambda clip, gen: {"precision": "fp32",
                                                                      "steps": 99})
    cfg = studio.config_from_values(values)[0]
    assert cfg.precision == "fp32" and cfg.steps == 6    # the page's own values win


def test_estimate_comes_from_measured_step_times(app, tiny_clip_dir):
    from clipforge.ui.timing import Timings, calibrate

    studio, initial = app.clipforge_studio, app.clipforge_initial
    cfg, _ = studio.config_from_values({**initial, "prompt": "x"})
    rate, source = studio.timings.per_step(cfg)          # launch() calibrated these settings
    assert rate > 0 and source == "at launch"
    text = studio.timings.text(cfg, 2)
    assert text.startswith("about ") and "2 × 6 steps" in text and "measured at launch" in text
    t = Timings()
    assert "not measured yet" in t.text(cfg)
    t.record(cfg, [0.5, 0.1, 0.2, 9.0], "by an earlier run")  # median: 0.35 s per step
    assert t.seconds(cfg, 2) == pytest.approx(0.35 * 6 * 2)
    assert t.text(cfg.replace(steps=40)) == ("about 14 s (40 steps at 0.350 s/step, measured "
                                             "by an earlier run)")
    assert t.per_step(cfg.replace(cutn=3)) is None     # other costs: not measured
    assert calibrate(studio, cfg.replace(cutn=3)) > 0
    assert studio.timings.per_step(cfg.replace(cutn=3))[1] == "at launch"


def test_a_run_measures_its_settings_for_the_next_estimate(client, app):
    studio = app.clipforge_studio
    result = client.predict(api_name="/generate", **args(cutn=4, steps=5))
    cfg = read_config(result[4])
    rate, source = studio.timings.per_step(cfg)
    assert rate > 0 and source == "by an earlier run"


def test_another_sessions_upload_is_not_readable_or_usable(app, tmp_path):
    """Two sessions: A's upload is stored under a name keyed by a server secret, so B can neither
    derive its path from the file's name or content nor read it by guessing; B's own upload of
    a file with the same name lands elsewhere, and nothing B receives names A's file."""
    import hashlib

    import httpx
    from PIL import Image

    a, b = Client(app.local_url, verbose=False), Client(app.local_url, verbose=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mine, theirs = tmp_path / "a" / "init.png", tmp_path / "b" / "init.png"
    Image.new("RGB", (32, 32), (12, 200, 34)).save(mine)
    Image.new("RGB", (32, 32), (200, 12, 34)).save(theirs)
    ra = a.predict(api_name="/generate", **args(init_image=handle_file(str(mine))))
    stored = read_config(ra[4]).init_image                   # where A's upload lives
    assert stored and stored.endswith("init.png")
    content = mine.read_bytes()
    digests = [f(content).hexdigest() for f in (hashlib.sha256, hashlib.sha1, hashlib.md5)]
    assert not any(d in stored for d in digests)             # the name is keyed by the server
    base, root = app.local_url.rstrip("/"), stored.rsplit("/", 2)[0]
    for d in digests:                                        # B's guesses read nothing
        r = httpx.get(f"{base}/gradio_api/file={root}/{d}/init.png")
        assert r.status_code in (403, 404) and r.content != content
    rb = b.predict(api_name="/generate", **args(init_image=handle_file(str(theirs))))
    assert read_config(rb[4]).init_image != stored           # same name, another place
    assert stored not in repr(rb)                            # B's outputs never name A's file
