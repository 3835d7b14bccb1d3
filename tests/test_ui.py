"""The studio through its HTTP API (gradio_client) and its engine (inputs, session, live).

One server is launched for the module (tiny random CLIP, 32 px, CPU). Jobs are streamed,
cancelled, overflowed, refused and failed with a simulated out-of-memory error; private
endpoints and file reads outside the allowed paths are probed.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError, AuthenticationError  # noqa: E402

from clipforge.config import RunConfig  # noqa: E402
from clipforge.outputs import read_config, read_png_text, save_png  # noqa: E402

SMALL = {"width": 32, "height": 32, "steps": 6, "cutn": 2, "preview_every": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tiny_clip_dir, tmp_path_factory):
    from clipforge.ui.app import launch

    demo = launch(port=free_port(), default_clip=str(tiny_clip_dir), device="cpu", max_queue=2,
                  output_dir=str(tmp_path_factory.mktemp("studio_out")), overrides=SMALL,
                  prevent_thread_lock=True, quiet=True)
    demo.clipforge_studio.min_preview_seconds = 0.0  # every k-th step streams
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    return Client(app.local_url, verbose=False)


def args(**over):
    """Keyword arguments of /generate: the page's defaults with ``over`` applied."""
    kw = {"prompt": "a red circle", "init_image": None, "image_prompts": None}
    kw.update(over)
    return kw


def wait_for(predicate, timeout=30.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_job_streams_previews_then_png_with_settings(client, app):
    job = client.submit(api_name="/generate", **args(prompt="a red circle:1.5 | blur:-0.5",
                                                     steps=6, seed=7))
    result = job.result(timeout=60)
    previews = [o[0] for o in job.outputs() if o[0] and isinstance(o[0], str)]
    assert len(set(previews)) >= 3  # steps 2, 4, 6 (and the final image)
    png = result[4]
    cfg = read_config(png)
    assert (cfg.prompt, cfg.seed, cfg.steps, cfg.width) == ("a red circle:1.5 | blur:-0.5", 7, 6, 32)
    assert "Seed: 7" in read_png_text(png)["parameters"]
    plot = result[1]["value"]  # an update: the frame, and the legend's parts (all of them)
    assert result[1]["colors_in_legend"] == ["total", "a red circle", "blur", "tv"]
    parts = {row[1] for row in plot["data"]}
    assert {"total", "a red circle", "blur", "tv"} <= parts
    assert [row[0] for row in plot["data"] if row[1] == "total"] == [2, 4, 6]
    assert result[2].startswith("done · step 6/6")
    assert len(result[3]) == 1  # this session's gallery


def test_seed_minus_one_is_drawn_reported_and_unicode_round_trips(client):
    prompt = "a red circle 🦊 | שלום | e\u0301\u200b\r\nsecond line:0.5"  # BAD_INPUTS row 3
    result = client.predict(api_name="/generate", **args(prompt=prompt, seed=-1, steps=1,
                                                         generator="pixel"))
    cfg = read_config(result[4])
    assert 0 <= cfg.seed < 2**53
    assert f"seed {cfg.seed}" in result[2]
    assert cfg.prompt == prompt and Path(result[4]).name.isascii()


def test_cancel_mid_run_frees_it_then_next_job_succeeds(client, app, monkeypatch):
    from clipforge.ui import live

    released = []
    original = live.LiveRun.release
    monkeypatch.setattr(live.LiveRun, "release",
                        lambda self: (released.append(self.i), original(self)))
    job = client.submit(api_name="/generate", **args(steps=5000, preview_every=1))
    assert wait_for(lambda: len(job.outputs()) >= 3)
    job.cancel()
    assert wait_for(lambda: released, timeout=20), "the run was not released after cancel"
    assert 0 < released[0] < 5000
    result = client.predict(api_name="/generate", **args(steps=2))
    assert read_config(result[4]).steps == 2


def test_queue_overflow_gets_queue_full_and_waiters_see_their_place(app):
    from gradio_client.utils import QueueError, Status

    clients = [Client(app.local_url, verbose=False) for _ in range(4)]
    running = clients[0].submit(api_name="/generate", **args(steps=5000, preview_every=1))
    assert wait_for(lambda: len(running.outputs()) >= 2)
    waiting = [c.submit(api_name="/generate", **args(steps=1)) for c in clients[1:3]]
    assert wait_for(lambda: all(w.status().code == Status.IN_QUEUE for w in waiting))
    assert sorted(w.status().rank for w in waiting) == [0, 1]
    overflow = clients[3].submit(api_name="/generate", **args(steps=1))
    with pytest.raises(QueueError, match="(?i)queue is full"):
        overflow.result(timeout=30)
    running.cancel()
    for w in waiting:  # once the long job is gone the waiting ones run
        assert read_config(w.result(timeout=60)[4]).steps == 1


BAD = [  # (row of BAD_INPUTS.md, arguments, the field the message names)
    (1, {"prompt": "   "}, "prompt: prompt is empty"),
    (2, {"prompt": "x" * 10_000_000}, "prompt: 10,000,000 characters"),
    (3, {"prompt": "a\x00b"}, "prompt: contains a NUL"),
    (5, {"width": 0}, "width: 0 is out of range"),
    (5, {"height": 33.5}, "height: expected a whole number"),
    (5, {"width": 4000}, "width: 4000 is more than this studio allows; allowed: 8..1024"),
    (5, {"width": 5000}, "width: 5000 is more than this studio allows; allowed: 8..1024"),
    # the studio's limits hold for API calls (BAD_INPUTS row 32), quoted as the studio's
    (32, {"prompt": "x" * 2_000_000}, "prompt: 2,000,000 characters; the studio accepts at "
                                      "most 20,000"),
    (32, {"height": 1025}, "height: 1025 is more than this studio allows; allowed: 8..1024"),
    (32, {"steps": 10001}, "steps: 10001 is more than this studio allows; allowed: 0..10000"),
    (32, {"steps": 100001}, "steps: 100001 is more than this studio allows; allowed: 0..10000"),
    (32, {"cutn": 256}, "cutn: 256 is more than this studio allows; allowed: 1..64"),
    (6, {"steps": 3.5}, "steps: expected a whole number"),
    (6, {"steps": -1}, "steps: -1 is out of range"),
    (7, {"lr": 0}, "lr: 0.0 is out of range"),
    (7, {"lr": -1}, "lr: -1.0 is out of range"),
    (8, {"seed": 2**64}, "seed: 18446744073709551616 is out of range"),
    (8, {"seed": "abc"}, "seed: expected a whole number"),
    (9, {"generator_options": '{"nope": 1}'}, "generator_options: unknown option 'nope'"),
    (28, {"generator_options": '{"min_size": "4"}'},  # not "'<' not supported between ..."
     "generator 'pixel' option min_size: expected a whole number, got '4'"),
    (9, {"clip": ["/etc"]}, "clip: '/etc' is not offered"),
    (9, {"generator": "vae", "generator_options": '{"model": "/etc"}'},
     "generator_options: model='/etc' names a file"),
    (9, {"generator": "vae", "generator_options": '{"model": "../x"}'},
     "generator_options: model='../x' names a file"),
]


@pytest.mark.parametrize("row,over,message", BAD, ids=[f"row{r}-{m.split(':')[0]}"
                                                       for r, _, m in BAD])
def test_invalid_input_is_refused_before_a_job(client, app, row, over, message):
    from gradio_client.exceptions import ValidationError

    before = app.clipforge_studio.jobs_started
    with pytest.raises(ValidationError) as err:
        client.predict(api_name="/generate", **args(**over))
    assert message in str(err.value)
    assert app.clipforge_studio.jobs_started == before  # no job was queued


@pytest.mark.parametrize("over", [{"generator": "nope"}, {"optimizer": "sgd"},
                                  {"preview_every": 0}])
def test_value_outside_a_dropdown_or_slider_is_refused_before_a_job(client, app, over):
    import httpx

    before = app.clipforge_studio.jobs_started
    # gradio itself refuses values not offered: the server answers the queue request with 400
    with pytest.raises(httpx.HTTPStatusError, match="400") as err:
        client.predict(api_name="/generate", **args(**over))
    assert err.value.response.status_code == 400
    assert err.value.request.url.path.endswith("/queue/join")
    assert app.clipforge_studio.jobs_started == before


@pytest.mark.parametrize("content,reason", [(b"", "the file is empty"),
                                            (b"not an image at all", "cannot read image")])
def test_unreadable_init_image_is_refused_before_a_job(client, app, tmp_path, content, reason):
    from gradio_client.exceptions import ValidationError

    bad = tmp_path / "fake.png"
    bad.write_bytes(content)
    before = app.clipforge_studio.jobs_started
    with pytest.raises(ValidationError, match=reason):
        client.predict(api_name="/generate", **args(init_image=handle_file(str(bad))))
    with pytest.raises(ValidationError, match=reason):
        client.predict(api_name="/generate", **args(image_prompts=[handle_file(str(bad))]))
    assert app.clipforge_studio.jobs_started == before


def test_init_image_and_image_prompt_run(client, tmp_path):
    img = tmp_path / "init.png"
    save_png(img, torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0)))
    result = client.predict(api_name="/generate", **args(
        init_image=handle_file(str(img)), init_weight=1.0, steps=2,
        image_prompts=[handle_file(str(img))], image_prompt_weight=0.5))
    cfg = read_config(result[4])
    assert cfg.init_weight == 1.0 and cfg.image_prompts[0].endswith(":0.5")



def _out_of_memory_at_call(monkeypatch, k: int) -> None:
    """Make the k-th Guide.loss call raise torch.OutOfMemoryError (a simulated OOM)."""
    from clipforge.guidance.guide import Guide

    calls = {"n": 0}
    real_loss = Guide.loss

    def loss(self, image, t=0.0):
        calls["n"] += 1
        if calls["n"] == k:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_loss(self, image, t)

    monkeypatch.setattr(Guide, "loss", loss)


def test_out_of_memory_fails_that_job_and_the_next_works(client, monkeypatch):
    _out_of_memory_at_call(monkeypatch, 3)
    with pytest.raises(AppError, match="out of memory at step 3.*smaller size, fewer cutouts"):
        client.predict(api_name="/generate", **args(steps=6))
    result = client.predict(api_name="/generate", **args(steps=6))
    assert read_config(result[4]).steps == 6


def test_sessions_keep_their_own_settings_and_share_one_model(app):
    a, b = Client(app.local_url, verbose=False), Client(app.local_url, verbose=False)
    ja = a.submit(api_name="/generate", **args(prompt="a red circle", seed=1, steps=3))
    jb = b.submit(api_name="/generate", **args(prompt="a blue square", seed=2, steps=3))
    ra, rb = ja.result(timeout=60), jb.result(timeout=60)
    assert (read_config(ra[4]).prompt, read_config(ra[4]).seed) == ("a red circle", 1)
    assert (read_config(rb[4]).prompt, read_config(rb[4]).seed) == ("a blue square", 2)
    assert len(ra[3]) == 1 and len(rb[3]) == 1  # galleries are per session
    assert len(app.clipforge_studio.cache._models) == 1  # loaded once for every session


def test_only_generate_is_public_and_files_outside_allowed_paths_are_refused(client, app,
                                                                           monkeypatch):
    import httpx

    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/generate"] and not api["unnamed_endpoints"]
    n_fns = len(app.fns)
    assert n_fns > 5  # pause, stop, resume, restore, randomize... exist but are private
    ran = []
    for index in range(1, n_fns):
        block_fn = app.fns[index]
        assert block_fn.api_visibility == "private", block_fn.name
        if block_fn.fn is not None:  # (a Stop button's cancel event has no function)
            monkeypatch.setattr(block_fn, "fn", lambda *a, _i=index, **k: ran.append(_i))
        with pytest.raises(ValueError, match=f"Invalid function index: {index}"):
            client.predict(fn_index=index)  # gradio's client refuses a private endpoint
    assert ran == []  # and none of them ran
    base = app.local_url.rstrip("/")
    for path in ("/file=/etc/passwd", "/gradio_api/file=/etc/passwd",
                 "/gradio_api/file=../../../../etc/passwd", "/gradio_api/monitoring",
                 "/gradio_api/call/stop", "/gradio_api/info?all_endpoints=true"):
        r = httpx.get(base + path)
        assert "root:" not in r.text
        if "info" not in path:
            assert r.status_code in (403, 404, 405), (path, r.status_code)
        else:
            assert "_stop" not in r.text and "_pause" not in r.text
            assert list(r.json()["named_endpoints"]) == ["/generate"]  # pause, stop... hidden
    assert app.server_name == "127.0.0.1" and not app.share
    result_png = save_png(app.clipforge_studio.output_dir / "clipforge-probe.png",
                          torch.zeros(1, 3, 8, 8))
    for prefix in ("/file=", "/gradio_api/file="):  # results are served only via gradio's cache
        assert httpx.get(base + prefix + str(result_png)).status_code in (403, 404)


def test_a_job_is_controlled_only_by_its_owner_over_raw_http(client, app):
    """"private" hides an event from the API page and refuses it in gradio's clients (above),
    but the page calls these events over HTTP, so anyone can send them, naming any session.
    Knowing the job's session hash is not enough: pause, stop, resume and cancel need what only
    the owner has (the page's owner token; the queue's event id). BAD_INPUTS row 33."""
    import httpx
    job = client.submit(api_name="/generate", **args(steps=5000, preview_every=1))
    victim = client.session_hash
    try:
        assert wait_for(lambda: len(job.outputs()) >= 2)
        base = app.local_url.rstrip("/")
        by_name = {f.name: f for f in app.fns.values()}
        for name in ("pause", "stop", "cancel", "resume", "randomize"):
            fn = by_name[name]
            n_inputs = len(fn.inputs)
            for token in ("", "guessed-token", None):
                body = {"data": [None] * (n_inputs - 2) + [token, None], "session_hash": victim,
                        "fn_index": fn._id}
                r = httpx.post(f"{base}/gradio_api/run/{fn.api_name}", json=body)
                if name == "resume":  # gradio runs its validator first: refused there
                    assert r.status_code != 200 or "refused" in r.text, (name, r.text)
        gen_index = by_name["generate"]._id
        r = httpx.post(f"{base}/gradio_api/cancel", json={"session_hash": victim,
                                                          "fn_index": gen_index,
                                                          "event_id": "guessed"})
        assert r.status_code == 403, r.text
        seen = len(job.outputs())
        assert wait_for(lambda: len(job.outputs()) >= seen + 3)  # the job goes on streaming
        assert not job.done() and "running · step" in job.outputs()[-1][2]  # not paused
    finally:
        job.cancel()  # the owner's cancel (with its event id) still works
    assert wait_for(job.done, timeout=20)


def test_uploads_over_max_file_size_are_refused(client, app, tmp_path):
    import httpx

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(11 * 1024 * 1024))
    before = app.clipforge_studio.jobs_started
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client checks
        client.predict(api_name="/generate", **args(init_image=handle_file(str(big))))
    r = httpx.post(app.local_url + "gradio_api/upload",  # and so does the server
                   files={"files": ("big.png", big.read_bytes(), "image/png")})
    assert r.status_code == 413
    assert app.clipforge_studio.jobs_started == before


# ---------------------------------------------------------------------------------------------
# the engine without a server


@pytest.fixture
def studio(tiny_clip_dir, tmp_path):
    from clipforge.ui.session import Studio

    return Studio(default_clip=str(tiny_clip_dir), device="cpu", output_dir=tmp_path)


def _config(studio, **over):
    from clipforge.ui.inputs import ui_defaults

    values = ui_defaults({**SMALL, "clip": studio.default_clip})
    values.update(prompt="a red circle", **over)
    return studio.config_from_values(values)[0]


def test_pause_and_resume_keep_the_optimizer_state(studio):
    from clipforge.ui.live import LiveRun

    cfg = _config(studio, steps=8, seed=3)
    straight = LiveRun(cfg, studio)
    for _ in straight.steps():
        pass
    paused = LiveRun(cfg, studio)
    for step in paused.steps():
        if step.i == 3:
            break  # a pause: the loop is closed, the run and its optimizer are kept
    paused.steer(cfg.prompt, cfg.negative_prompt, cfg.lr)  # resume with nothing changed
    for _ in paused.steps():
        pass
    assert paused.i == 8
    assert torch.equal(paused.run.image(), straight.run.image())
    state = next(iter(paused.opt.state.values()))
    assert int(state["step"]) == 8


def test_steering_changes_prompts_weights_and_lr_and_is_recorded(studio, tmp_path):
    from clipforge.ui.live import LiveRun

    live = LiveRun(_config(studio, steps=6), studio)
    it = live.steps()
    for step in it:
        if step.i == 2:
            break
    it.close()
    moments = {k: v["exp_avg"].clone() for k, v in live.opt.state.items()}
    live.steer("a green square:2 | a red circle:0.5", "noise", 0.02)
    assert [(p.text, p.weight) for p in live.run.guide.prompts] == [
        ("a green square", 2.0), ("a red circle", 0.5), ("noise", -1.0)]
    assert all(g["lr"] == 0.02 for g in live.opt.param_groups)
    assert all(torch.equal(live.opt.state[k]["exp_avg"], v) for k, v in moments.items())
    parts = None
    for step in live.steps():
        parts = step.losses
    assert {"a green square", "a red circle", "noise"} <= set(parts)
    png = live.save(tmp_path / "steered.png")
    assert read_config(png).prompt == "a red circle"  # the settings it started with
    steering = read_png_text(png)["clipforge_steering"]
    assert '"step": 2' in steering and "a green square:2" in steering


def test_steering_is_checked_before_it_is_queued(studio):
    from clipforge.ui.inputs import InputError

    base = _config(studio)
    assert studio.check_steering(base, "a green square:2", "noise", 0.01, 3) == 3
    for args_, message in [(("  ", "", 0.01, 3), "prompt: prompt is empty"),
                           (("x", "", float("nan"), 3), "lr: must be finite"),
                           (("x", "", 0.0, 3), "lr: 0.0 is out of range"),
                           (("x\x00", "", 0.01, 3), "prompt: contains a NUL"),
                           (("x", "", 0.01, 0), "preview_every: 0 is not allowed")]:
        with pytest.raises(InputError, match=message):
            studio.check_steering(base, *args_)


def test_input_errors_are_usage_errors_on_their_control_and_become_gr_errors(studio):
    import gradio as gr

    from clipforge.errors import EXIT_USAGE, NonFiniteLossError, UsageError, exit_code
    from clipforge.ui.handlers import guarded
    from clipforge.ui.inputs import InputError

    with pytest.raises(InputError) as err:
        studio.check_steering(_config(studio), "x", "", 0.0, 3)
    assert isinstance(err.value, UsageError) and exit_code(err.value) == EXIT_USAGE
    assert err.value.field == "lr" and str(err.value).startswith("lr: 0.0 is out of range")
    assert str(InputError("seed", "seed: bad")) == "seed: bad"  # no second "field: " prefix

    def fail(exc):
        raise exc

    for exc in (err.value, NonFiniteLossError(3, "loss is nan at step 3")):
        with pytest.raises(gr.Error, match=str(exc)[:12]):
            guarded(lambda: fail(exc))
    with pytest.raises(ValueError, match="not clipforge's") as other:  # passes unchanged
        guarded(lambda: fail(ValueError("not clipforge's")))
    assert not isinstance(other.value, gr.Error)


def test_at_most_max_paused_runs_are_kept(studio):
    from clipforge.ui.live import LiveRun
    from clipforge.ui.session import Session

    studio.max_paused = 2
    sessions = [Session() for _ in range(3)]
    runs = [LiveRun(_config(studio, steps=2), studio) for _ in sessions]
    for sess, live in zip(sessions, runs):
        studio.hold_paused(sess, live)
    assert sessions[0].paused is None and "more than 2 runs were paused" in \
        sessions[0].dropped_reason
    assert runs[0].run.generator is None  # its memory was released
    assert sessions[1].paused is runs[1] and sessions[2].paused is runs[2]
    sessions[1].stop()  # Stop frees a paused run too
    assert sessions[1].paused is None and runs[1].run.generator is None


def test_out_of_memory_releases_the_run(studio, monkeypatch):
    import gc
    import weakref

    from clipforge.errors import RunOutOfMemoryError
    from clipforge.ui.live import LiveRun

    _out_of_memory_at_call(monkeypatch, 2)
    live = LiveRun(_config(studio, steps=5), studio)
    params = [weakref.ref(p) for p in live.run.generator.parameters()]
    with pytest.raises(RunOutOfMemoryError, match="at step 2 .*smaller size") as err:
        for _ in live.steps():
            pass
    gc.collect()
    assert err.value is not None and all(p() is None for p in params)  # device memory is free


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_out_of_memory_returns_device_memory_on_cuda(tiny_clip_dir, tmp_path, monkeypatch):
    from clipforge.errors import RunOutOfMemoryError
    from clipforge.ui.live import LiveRun
    from clipforge.ui.session import Studio

    studio = Studio(default_clip=str(tiny_clip_dir), device="cuda", output_dir=tmp_path)
    cfg = _config(studio, width=256, height=256, cutn=32, steps=5)
    studio.cache.get(str(tiny_clip_dir), studio.device)  # the shared model stays loaded
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    _out_of_memory_at_call(monkeypatch, 3)
    live = LiveRun(cfg, studio)
    with pytest.raises(RunOutOfMemoryError, match="smaller size"):
        for _ in live.steps():
            pass
    del live
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == baseline
    monkeypatch.undo()  # the real Guide.loss again
    live = LiveRun(cfg, studio)
    assert sum(1 for _ in live.steps()) == 5


def test_studio_refuses_model_paths_and_oversize(studio, tmp_path):
    from PIL import Image

    from clipforge.ui.inputs import InputError

    huge = tmp_path / "huge.png"
    Image.new("L", (5000, 4000)).save(huge)  # 20 Mpx, a few kB on disk
    with pytest.raises(InputError, match="init_image: 5000x4000 is larger than the studio's"):
        _config(studio, init_image=str(huge))

    with pytest.raises(InputError, match="clip: '/tmp' is not offered"):
        _config(studio, clip=["/tmp"])
    with pytest.raises(InputError, match="clip:.*not offered"):
        _config(studio, clip=["ViT-B-32:/etc/passwd"])
    _config(studio, clip=[f"{studio.default_clip[0]}@0.5"])  # a weight on an offered model
    with pytest.raises(InputError, match="steps: 20000 is more than this studio allows"):
        _config(studio, steps=20000)


def test_restore_from_png_fills_the_controls(tmp_path):
    from clipforge.ui.controls import restore_controls as _restore

    cfg = RunConfig(prompt="a fox:1.5 | fog:-0.5", seed=42, width=48, height=40, steps=12,
                    generator="pixel", generator_options={"min_size": 8})
    png = save_png(tmp_path / "a.png", torch.zeros(1, 3, 40, 48), cfg)
    names = ["prompt", "seed", "width", "generator", "generator_options"]
    values = _restore(str(png), names)
    assert values[:-1] == ["a fox:1.5 | fog:-0.5", 42, 48, "pixel", '{"min_size": 8}']
    assert "seed 42" in values[-1]
    plain = tmp_path / "plain.png"
    save_png(plain, torch.zeros(1, 3, 8, 8))
    assert "cannot restore" in _restore(str(plain), names)[-1]


def test_every_registered_generator_is_offered(tiny_clip_dir, monkeypatch):
    from clipforge import registry
    from clipforge.ui.app import build_demo

    monkeypatch.setitem(registry.GENERATORS, "newgen", registry.GENERATORS["pixel"])
    demo = build_demo(default_clip=str(tiny_clip_dir), device="cpu")
    dropdown = next(b for b in demo.blocks.values() if getattr(b, "elem_id", "") == "cf-generator")
    assert [c[0] for c in dropdown.choices] == list(registry.GENERATORS)
    assert "newgen" in list(registry.GENERATORS)


def test_controls_take_defaults_and_ranges_from_runconfig(tiny_clip_dir):
    from clipforge.config import field_defaults
    from clipforge.ui.app import build_demo

    demo = build_demo(default_clip=str(tiny_clip_dir), device="cpu")
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    defaults = field_defaults()
    for name in ("width", "steps", "lr", "cutn", "seed", "tv_weight"):
        assert by_id[f"cf-{name}"].value == defaults[name]
    assert "Allowed: > 0" in by_id["cf-lr"].info
    # the studio's own limits, not the engine's 4096 px / 100000 steps (defect 10)
    assert "Allowed: 8..1024 in this studio" in by_id["cf-width"].info
    assert "Allowed: 0..10000 in this studio" in by_id["cf-steps"].info
    assert "Allowed: 1..64 in this studio" in by_id["cf-cutn"].info
    assert not any(n in by_id[f"cf-{k}"].info for n in ("4096", "100000")
                   for k in ("width", "height", "steps"))
    assert by_id["cf-optimizer"].choices == [(c, c) for c in ("adam", "adamw")]
    from clipforge.ui.inputs import NOT_IN_UI, UI_FIELDS

    config_fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert config_fields <= set(UI_FIELDS) | set(NOT_IN_UI)  # a new setting must be placed
    assert all(f"cf-{name}" in by_id for name in UI_FIELDS)


def test_pause_is_not_offered_to_a_run_that_cannot_pause():
    from clipforge.ui.controls import STATE_OUTPUTS, page_state

    pause = STATE_OUTPUTS.index("pause")
    assert page_state("running", resumable=True)[pause]["interactive"] is True
    assert page_state("running", resumable=False)[pause]["interactive"] is False  # diffusion


def test_auth_parsing_and_safe_launch_defaults():
    import inspect

    from clipforge.ui.app import launch, parse_auth

    assert parse_auth("ann:se:cret") == ("ann", "se:cret")
    assert parse_auth(None) is None
    for bad in ("nocolon", ":pw", "user:"):
        with pytest.raises(ValueError, match="USER:PASSWORD"):
            parse_auth(bad)
    params = inspect.signature(launch).parameters
    assert params["host"].default == "127.0.0.1" and params["share"].default is False


def test_clipforge_ui_command_in_process(tiny_clip_dir, monkeypatch, tmp_path):
    """`clipforge ui --host 127.0.0.1 --port P --auth artist:secret --outdir D` through the CLI's code;
    only the blocking wait is removed, so the test can talk to the server it starts."""
    import httpx
    from typer.testing import CliRunner

    from clipforge import cli
    from clipforge.ui import app as ui_app

    started = []
    real_launch = ui_app.launch

    def launch(**kwargs):
        assert kwargs["quiet"] is False  # the CLI passes its -q on; the test keeps it quiet
        started.append(real_launch(**{**kwargs, "quiet": True}, prevent_thread_lock=True))
        return started[-1]

    monkeypatch.setattr(ui_app, "launch", launch)
    port = free_port()
    outdir = tmp_path / "results"
    result = CliRunner().invoke(cli.app, ["ui", "--host", "127.0.0.1", "--port", str(port),
                                          "--auth", "artist:secret", "--outdir", str(outdir)])
    assert result.exit_code == 0, result.output
    demo = started[0]
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/config").status_code in (401, 403)
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(base, verbose=False)  # no login, no API
        client = Client(base, auth=("artist", "secret"), verbose=False)
        assert "/generate" in client.view_api(print_info=False, return_format="dict")[
            "named_endpoints"]
        assert "shapes" in demo.clipforge_studio.default_clip  # the bundled offline default
        assert demo.clipforge_studio.output_dir == outdir and outdir.is_dir()
    finally:
        demo.close()


@pytest.mark.slow
def test_clipforge_ui_command_serves_the_studio_behind_a_login(tmp_path):
    """`clipforge ui --host 127.0.0.1 --port P --auth artist:secret`, as in the README."""
    import httpx

    port = free_port()
    cli = [sys.executable, "-c", "from clipforge.cli import main; main()"]
    proc = subprocess.Popen(cli + ["ui", "--host", "127.0.0.1", "--port", str(port), "--auth",
                                   "artist:secret"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up():
            try:
                return httpx.get(base + "/config", timeout=2).status_code in (401, 403)
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                return False

        assert wait_for(up, timeout=60, every=0.25)
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(base, verbose=False)  # no login, no API
        client = Client(base, auth=("artist", "secret"), verbose=False)
        assert "/generate" in client.view_api(print_info=False, return_format="dict")[
            "named_endpoints"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_import_clipforge_does_not_import_gradio_and_missing_gradio_says_what_to_install():
    code = ("import sys, clipforge; clipforge.RunConfig; import clipforge.ui; "
            "import clipforge.ui.inputs, clipforge.ui.session, clipforge.ui.live; assert 'gradio' not in sys.modules, 'gradio imported'; "
            "sys.modules['gradio'] = None\n"
            "try:\n    import clipforge.ui.app\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'clipforge[ui]'" in out.stdout


def test_offline_hub_model_fails_fast_in_studio_terms(client, app, monkeypatch):
    """An open_clip ARCH:TAG on a machine without the hub: the job fails within seconds (not
    ~30 s of retries), saying what to do in the studio, not which CLI flag to pass (row 34)."""
    import huggingface_hub.constants as hub_constants

    from clipforge import offline

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)      # restored afterwards
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", hub_constants.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HOME", str(app.clipforge_studio.output_dir / "empty-hf-home"))
    offline.forget()
    try:
        t0 = time.perf_counter()
        with pytest.raises(AppError) as err:
            client.predict(api_name="/generate", **args(clip=["ViT-B-32:laion2b_s34b_b79k"],
                                                        steps=1))
        seconds = time.perf_counter() - t0
    finally:
        offline.forget()
    message = str(err.value)
    assert "cannot reach the model hub" in message and "127.0.0.1 cannot be reached" in message
    assert "offered CLIP models" in message and "--clip" not in message
    print(f"offline failure after {seconds:.1f} s")
    assert seconds < 15, seconds
