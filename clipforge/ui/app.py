"""The clipforge studio: live, steerable CLIP-guided generation in the browser (Gradio).

``clipforge ui`` calls :func:`launch`. The page drives the same loop as the CLI
(:func:`clipforge.loop.optimize` over a :class:`clipforge.loop.Run`): it streams previews, a
loss plot and progress; Stop cancels and frees the run; Pause keeps the optimizer and lets you
edit prompts, weights and learning rate before Resume. Its controls are derived from
:class:`clipforge.config.RunConfig` (labels, help, ranges, defaults), so a default exists once.

Sharing one GPU: every event that touches the model shares one concurrency id with limit 1,
the queue has a maximum size, input is checked by a validator *before* a job is queued, and
per-session state lives in a ``gr.State`` (see :mod:`clipforge.ui.studio`). Internal events
(pause, stop, restore, randomize) are ``api_visibility="private"``.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import fields
from typing import Any, Sequence

try:
    import gradio as gr
except ImportError as _e:  # pragma: no cover - exercised by a test with gradio hidden
    raise ImportError("the clipforge studio needs gradio, which is not installed; run: "
                      "pip install 'clipforge[ui]'") from _e

from clipforge.config import RunConfig, field_help
from clipforge.ui.studio import (ADVANCED_FIELDS, IMAGE_FIELDS, MAX_PREVIEW_EVERY,
                                 MODEL_FIELDS, TEXT_FIELDS, UI_FIELDS, UI_MAX_PROMPT_CHARS,
                                 InputError, LiveRun, Result, Session, Studio, progress_text,
                                 random_seed, ui_defaults)

# previews are small images: show them large, with crisp pixels
CSS = "#cf-preview img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"

CONCURRENCY_ID = "clipforge-model"  # every event that touches the model shares this id
PLOT_COLUMNS = ("step", "part", "loss")
STATUS_SECONDS = 0.5  # the progress line updates at least this often between previews

LABELS = {
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "clip": "CLIP model(s)",
    "generator": "Generator", "generator_options": "Generator options (JSON)",
    "width": "Width", "height": "Height", "steps": "Steps", "lr": "Learning rate",
    "cutn": "Cutouts", "seed": "Seed", "preview_every": "Preview every k steps",
    "init_image": "Init image", "init_weight": "Init image weight",
    "image_prompts": "Image prompts", "image_prompt_weight": "Image prompt weight",
    "optimizer": "Optimizer", "schedule": "LR schedule", "warmup_steps": "Warm-up steps",
    "cut_pow": "Cutout size exponent", "augment": "Augment cutouts",
    "tv_weight": "Smoothness (TV) weight", "range_weight": "Range loss weight",
}
_FIELDS = {f.name: f for f in fields(RunConfig)}

HEADER = """# clipforge studio
Type a prompt and press **Generate**: an image is pushed, step by step, toward what a CLIP
model sees in your words. **Pause** to edit the prompt, its `:weights` or the learning rate,
then **Resume** — the optimizer keeps its state. Drop a clipforge PNG below to restore its
settings. Prompt syntax: `a red circle:1.5 | a blue background | noise:-0.5`."""


def _model_note(studio: Studio) -> str:
    if "shapes" in studio.default_clip and "shapes" in studio._bundled_present():
        return ("Runs offline with the bundled **shapes** CLIP, a small model clipforge trains "
                "on captioned shapes (\"a red circle on a blue background\"): it knows colours "
                "and simple shapes, not photographs. Larger open_clip models can be chosen by "
                "name:tag where this server can load them.")
    if "shapes" not in studio._bundled_present():
        return (f"The bundled **shapes** model is not installed here; the default model is "
                f"`{', '.join(studio.default_clip)}`.")
    return f"Default model: `{', '.join(studio.default_clip)}`."


def _range_text(name: str) -> str:
    meta = _FIELDS[name].metadata
    lo = meta.get("min", meta.get("min_exclusive"))
    hi = meta.get("max")
    if lo is None and hi is None:
        return ""
    op = ">" if "min_exclusive" in meta else ">="
    return f" Allowed: {op} {lo:g}" + (f" and <= {hi:g}." if hi is not None else ".")


def _control(name: str, value: Any, studio: Studio) -> gr.components.Component:
    """A component for one setting, from the RunConfig field's help, range and default."""
    label = LABELS.get(name, name)
    help_ = field_help().get(name, "")
    if name in ("prompt", "negative_prompt"):
        return gr.Textbox(value=value, label=label, info=help_, lines=2,
                          max_length=UI_MAX_PROMPT_CHARS, elem_id=f"cf-{name}",
                          placeholder="a red circle on a blue background:1.5 | blurry:-0.5"
                          if name == "prompt" else "")
    if name == "clip":
        here = ("This studio accepts the listed models" + (" and open_clip ARCH:TAG names"
                if studio.allow_pretrained else "") + "; `@W` weights a member of an ensemble.")
        return gr.Dropdown(choices=list(studio.clip_choices), value=list(value), multiselect=True,
                           allow_custom_value=True, label=label, info=here, elem_id="cf-clip")
    if name == "generator":
        from clipforge import registry

        return gr.Dropdown(choices=list(registry.GENERATORS), value=value, label=label,
                           info=_generator_info(value), elem_id="cf-generator")
    if name == "init_image":
        return gr.File(label=label, file_types=["image"], file_count="single",
                       elem_id="cf-init_image")
    if name == "image_prompts":
        return gr.File(label=label, file_types=["image"], file_count="multiple",
                       elem_id="cf-image_prompts")
    if name == "image_prompt_weight":
        return gr.Number(value=value, label=label, info="Weight of each image prompt "
                         "(negative steers away).", elem_id="cf-image_prompt_weight")
    if name == "preview_every":
        return gr.Slider(1, 50, value=value, step=1, label=label, elem_id="cf-preview_every",
                         info=f"Send a preview and loss point every k steps (1..50 here, "
                              f"up to {MAX_PREVIEW_EVERY} through the API).")
    f = _FIELDS[name]
    if "choices" in f.metadata:
        return gr.Dropdown(choices=list(f.metadata["choices"]), value=value, label=label,
                           info=help_, elem_id=f"cf-{name}")
    if isinstance(f.default, bool):
        return gr.Checkbox(value=value, label=label, info=help_, elem_id=f"cf-{name}")
    extra = ""
    if name in ("width", "height"):
        extra = f" This studio allows up to {studio.max_side}."
    if name == "steps":
        extra = f" This studio allows up to {studio.max_steps}."
    # no minimum/maximum on the component: out-of-range values reach the validator, which
    # names the setting and the allowed range instead of a generic error
    return gr.Number(value=value, label=label, info=help_ + _range_text(name) + extra,
                     elem_id=f"cf-{name}")


def _generator_info(name: str) -> str:
    from clipforge import registry

    spec = registry.GENERATORS.get(name)
    return f"{spec.summary}" if spec else "Generator name."


def _options_info(name: str) -> str:
    from clipforge import registry
    from clipforge.config import ConfigError

    try:
        opts = registry.generator_options(name)
    except ConfigError as e:
        return str(e)
    return "Options and defaults: " + (json.dumps(opts, default=str) if opts else "none")


def _named(fn, names: Sequence[str]):
    """Give ``fn(*values)`` a signature with these parameter names (shown by the API page)."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    fn.__signature__ = inspect.Signature(params)
    return fn


def _plot_frame(live: LiveRun | None, max_points: int = 200):
    """The loss history as a DataFrame (step, part, loss) thinned to ``max_points`` steps, or
    None before the first point."""
    import pandas as pd

    rows = live.history if live is not None else []
    if not rows:  # None, not an empty frame: a plot first given no rows draws no lines later
        return None
    steps = sorted({r["step"] for r in rows})
    if len(steps) > max_points:  # keep evenly spaced steps and always the latest
        keep = {steps[round(k * (len(steps) - 1) / (max_points - 1))] for k in range(max_points)}
        rows = [r for r in rows if r["step"] in keep]
    frame = pd.DataFrame(rows, columns=list(PLOT_COLUMNS))
    return frame.astype({"step": "int64", "part": "str", "loss": "float64"})


# page states of the four run buttons: generate, pause, resume, stop
def _buttons(state: str) -> tuple:
    running, paused = state == "running", state == "paused"
    return (gr.update(interactive=not running),
            gr.update(interactive=running, visible=not paused),
            gr.update(visible=paused, interactive=paused),
            gr.update(interactive=running or paused))


def build_demo(*, default_clip: str | Sequence[str] = "shapes",
               clip_choices: Sequence[str] | None = None, device: str = "auto",
               max_queue: int = 16, max_side: int = 1024, max_steps: int = 10_000,
               output_dir: str | None = None, overrides: dict[str, Any] | None = None,
               studio: Studio | None = None) -> gr.Blocks:
    """Build the studio page (queue configured; not launched).

    Args:
        default_clip: CLIP spec(s) selected at start; ``shapes`` is the bundled offline model.
        clip_choices: further CLIP specs offered (only offered specs and open_clip pretrained
            ``ARCH:TAG`` names are accepted from the page).
        device: where runs execute (``auto``: CUDA when present, else CPU).
        max_queue: jobs that may wait in the queue; more get "queue is full".
        max_side: largest width/height a user may ask for.
        max_steps: most steps per run.
        output_dir: where result PNGs go (a temporary folder by default).
        overrides: initial control values instead of RunConfig's defaults, e.g. ``{"width": 64}``.
        studio: an existing :class:`Studio` (shares its model cache); built from the above if None.

    Returns:
        the ``gr.Blocks``; ``demo.clipforge_studio`` is its :class:`Studio`.
    """
    studio = studio or Studio(default_clip=default_clip, clip_choices=clip_choices,
                              device=device, max_side=max_side, max_steps=max_steps,
                              output_dir=output_dir)
    initial = ui_defaults({"clip": tuple(studio.default_clip), **(overrides or {})})

    with gr.Blocks(title="clipforge studio", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        session = gr.State(Session(), delete_callback=lambda s: s.stop() if s else None)
        gr.Markdown(HEADER)
        gr.Markdown(_model_note(studio), elem_id="cf-model-note")
        c: dict[str, gr.components.Component] = {}
        with gr.Row():
            with gr.Column(scale=5):
                for name in TEXT_FIELDS:
                    c[name] = _control(name, initial[name], studio)
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="cf-generate")
                    pause_btn = gr.Button("Pause", interactive=False, elem_id="cf-pause")
                    resume_btn = gr.Button("Resume", visible=False, variant="primary",
                                           elem_id="cf-resume")
                    stop_btn = gr.Button("Stop", variant="stop", interactive=False,
                                         elem_id="cf-stop")
                with gr.Row():
                    for name in MODEL_FIELDS[:2]:
                        c[name] = _control(name, initial[name], studio)
                c["generator_options"] = gr.Textbox(
                    value=json.dumps(initial["generator_options"])
                    if initial["generator_options"] else "",
                    label=LABELS["generator_options"], info=_options_info(initial["generator"]),
                    placeholder="{} = the generator's defaults", elem_id="cf-generator_options")
                with gr.Row():
                    for name in ("width", "height", "steps"):
                        c[name] = _control(name, initial[name], studio)
                with gr.Row():
                    for name in ("lr", "cutn"):
                        c[name] = _control(name, initial[name], studio)
                with gr.Row():
                    c["seed"] = _control("seed", initial["seed"], studio)
                    randomize_btn = gr.Button("Random seed", size="sm", elem_id="cf-randomize")
                c["preview_every"] = _control("preview_every", initial["preview_every"], studio)
                with gr.Accordion("Image prompts and init image", open=False):
                    for name in IMAGE_FIELDS:
                        c[name] = _control(name, initial.get(name), studio)
                with gr.Accordion("More settings", open=False):
                    for name in ADVANCED_FIELDS:
                        c[name] = _control(name, initial[name], studio)
                restore = gr.File(label="Drop a clipforge PNG here to restore its settings",
                                  file_types=[".png"], height=120, elem_id="cf-restore")
            with gr.Column(scale=6):
                preview = gr.Image(label="Preview", type="pil", format="png", interactive=False,
                                   height=384, elem_id="cf-preview")
                status = gr.Markdown("idle", elem_id="cf-status")
                plot = gr.LinePlot(None, x="step", y="loss", color="part",
                                   title="Loss parts", height=220, elem_id="cf-plot")
                download = gr.File(label="Result PNG (settings embedded)", interactive=False,
                                   elem_id="cf-download")
                gallery = gr.Gallery(label="This session's results", columns=4, height=220,
                                     elem_id="cf-gallery")

        assert set(c) == set(UI_FIELDS), sorted(set(UI_FIELDS) ^ set(c))
        controls = [c[name] for name in UI_FIELDS]
        buttons = [generate_btn, pause_btn, resume_btn, stop_btn]
        outputs = [preview, plot, status, gallery, download, *buttons]

        # ---- the job: validate (before queueing), load, step, stream ----

        def validate(*args):
            *values, sess = args
            try:
                studio.config_from_values(dict(zip(UI_FIELDS, values)))
            except InputError as e:
                return _validation([*UI_FIELDS, "session"], e)
            return [gr.validate(True, "") for _ in args]

        def generate(*args):
            *values, sess = args
            try:
                cfg, every = studio.config_from_values(dict(zip(UI_FIELDS, values)))
            except InputError as e:
                raise gr.Error(str(e)) from None
            job = studio.start_job()
            sess.drop_paused()
            sess.begin(job)
            yield (gr.skip(), _plot_frame(None), "loading the model…", sess.gallery(),
                   gr.skip(), *_buttons("running"))
            live = _guarded(lambda: _load(cfg))
            yield from _drive(live, sess, job, every)

        def resume(prompt, negative_prompt, lr, preview_every, sess):
            live = sess.paused
            if live is None:
                raise gr.Error("nothing to resume: no run is paused in this session"
                               + (f" (the paused run was {sess.dropped_reason})"
                                  if sess.dropped_reason else ""))
            try:
                every = studio.check_steering(live.current, prompt, negative_prompt, lr,
                                              preview_every)
            except InputError as e:
                raise gr.Error(str(e)) from None
            job = studio.start_job()
            sess.begin(job)
            sess.paused = None
            try:
                with studio.step_lock:
                    _guarded(lambda: live.steer(prompt or "", negative_prompt or "", float(lr)))
            except gr.Error:
                studio.hold_paused(sess, live)  # bad steering: the run stays paused
                raise
            yield (gr.skip(), _plot_frame(live), progress_text(live, 0, 0, "resuming"),
                   sess.gallery(), gr.skip(), *_buttons("running"))
            yield from _drive(live, sess, job, every)

        def validate_steer(prompt, negative_prompt, lr, preview_every, sess):
            names = ("prompt", "negative_prompt", "lr", "preview_every", "session")
            if sess is None or sess.paused is None:
                why = f" (the paused run was {sess.dropped_reason})" if sess and \
                    sess.dropped_reason else ""
                return _validation(names, InputError("prompt", "nothing to resume: no run is "
                                                     f"paused in this session{why}"))
            try:
                studio.check_steering(sess.paused.current, prompt, negative_prompt, lr,
                                      preview_every)
            except InputError as e:
                return _validation(names, e)
            return [gr.validate(True, "") for _ in names]

        def _load(cfg: RunConfig) -> LiveRun:
            import warnings

            with studio.step_lock, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                live = LiveRun(cfg, studio)
            for w in caught[:3]:
                gr.Warning(str(w.message))
            return live

        def _drive(live: LiveRun, sess: Session, job: int, every: int):
            from clipforge.images import to_pil

            steps = live.steps()
            seg_steps, seg_seconds, paused, finished = 0, 0.0, False, False
            last_sent = 0.0
            try:
                while not sess.should_stop(job):
                    with studio.step_lock:
                        t0 = time.perf_counter()
                        step = _guarded(lambda: next(steps, None))
                        dt = time.perf_counter() - t0
                    if step is None:
                        finished = True
                        break
                    live.seconds += dt
                    seg_seconds += dt
                    seg_steps += 1
                    now = time.perf_counter()
                    if sess.should_stop(job):
                        break  # Stop was pressed during this step: send no stale progress
                    if step.i == step.total or (step.i % every == 0 and
                                                now - last_sent >= studio.min_preview_seconds):
                        last_sent = now
                        live.record(step)
                        live.last_preview = to_pil(step.image)
                        yield (live.last_preview, _plot_frame(live),
                               progress_text(live, seg_steps, seg_seconds), gr.skip(),
                               gr.skip(), *_buttons("running"))
                    elif now - last_sent >= STATUS_SECONDS:
                        # progress text only; each yield is also where a cancelled job ends
                        last_sent = now
                        yield (gr.skip(), gr.skip(), progress_text(live, seg_steps, seg_seconds),
                               *(gr.skip() for _ in range(6)))
                    if sess.pause_requested.is_set() and not live.resumable:
                        sess.pause_requested.clear()
                        gr.Warning(f"generator {live.config.generator!r} samples in one pass "
                                   "and cannot pause; let it finish or Stop it")
                    if sess.pause_requested.is_set() and not live.done:
                        studio.hold_paused(sess, live)
                        paused = True
                        yield (gr.skip(), _plot_frame(live),
                               progress_text(live, seg_steps, seg_seconds, "paused") +
                               " — edit the prompt, weights or learning rate, then Resume",
                               gr.skip(), gr.skip(), *_buttons("paused"))
                        return
                if sess.should_stop(job) and not finished:
                    # the last word of a stopped job, so a progress update racing the Stop
                    # click cannot leave "running" on the page
                    yield (gr.skip(), gr.skip(), "stopped", gr.skip(), gr.skip(),
                           *_buttons("idle"))
                elif finished or live.done:
                    with studio.step_lock:
                        path = live.save(studio.result_path(sess, live.config.seed))
                        image = _guarded(lambda: to_pil(live.run.image()))
                    sess.add_result(Result(path, f"{live.config.prompt[:60]} · seed "
                                                 f"{live.config.seed}"))
                    yield (image, _plot_frame(live),
                           progress_text(live, seg_steps, seg_seconds, "done"), sess.gallery(),
                           str(path), *_buttons("idle"))
            finally:
                steps.close()
                if not paused:
                    live.release()

        api_names = [*UI_FIELDS, "session"]
        gen_event = generate_btn.click(
            _named(generate, api_names), [*controls, session], outputs,
            validator=_named(validate, api_names), api_name="generate",
            api_description="Run one generation; streams previews, loss plot and progress, "
                            "then the result PNG (settings embedded).",
            concurrency_id=CONCURRENCY_ID, concurrency_limit=1, trigger_mode="once",
            show_progress="minimal", show_progress_on=[preview])
        gen_event.then(_settle, [session], buttons, queue=False, api_visibility="private")

        steer_inputs = [c["prompt"], c["negative_prompt"], c["lr"], c["preview_every"], session]
        resume_event = resume_btn.click(
            resume, steer_inputs, outputs, validator=validate_steer, api_visibility="private",
            concurrency_id=CONCURRENCY_ID, concurrency_limit=1, trigger_mode="once",
            show_progress="minimal", show_progress_on=[preview])
        resume_event.then(_settle, [session], buttons, queue=False, api_visibility="private")

        pause_btn.click(_pause, [session], [pause_btn], queue=False,
                        api_visibility="private")
        stop_btn.click(_stop, [session], [status, *buttons], queue=False,
                       cancels=[gen_event, resume_event], api_visibility="private")
        randomize_btn.click(random_seed, None, c["seed"], queue=False, api_visibility="private")
        c["generator"].change(lambda name: (gr.update(info=_generator_info(name)),
                                            gr.update(info=_options_info(name))),
                              c["generator"], [c["generator"], c["generator_options"]],
                              queue=False, api_visibility="private")
        restorable = [n for n in UI_FIELDS if n not in ("init_image", "image_prompts",
                                                        "image_prompt_weight", "preview_every")]
        restore.upload(lambda f: _restore(f, restorable), restore,
                       [c[n] for n in restorable] + [status], queue=False,
                       api_visibility="private")

    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    demo.clipforge_studio = studio
    return demo


def _guarded(fn):
    """Call ``fn``; clipforge's input and run errors become a ``gr.Error`` with their message."""
    from clipforge.errors import NonFiniteLossError, RunOutOfMemoryError

    try:
        return fn()
    except (ValueError, RunOutOfMemoryError, NonFiniteLossError) as e:
        # ConfigError, ModelLoadError, ImageReadError are ValueErrors with actionable messages
        raise gr.Error(str(e), print_exception=False) from None


def _validation(names: Sequence[str], err: InputError) -> list:
    out = [gr.validate(True, "") for _ in names]
    index = list(names).index(err.field) if err.field in names else 0
    out[index] = gr.validate(False, str(err))
    return out


def _settle(sess: Session | None):
    """Buttons after a job ended (finished, failed or paused)."""
    return _buttons("paused" if sess is not None and sess.paused is not None else "idle")


def _pause(sess: Session):
    # only the button: the running job itself writes "paused" to the status, and a second
    # writer here could land after it and leave a stale "pausing" on the page
    sess.pause_requested.set()
    return gr.update(interactive=False)


def _stop(sess: Session):
    sess.stop()
    return "stopped", *_buttons("idle")


def _restore(file, names: Sequence[str]):
    """Settings from a dropped clipforge PNG, as updates of the controls."""
    from clipforge.config import ConfigError
    from clipforge.outputs import read_config
    from clipforge.ui.studio import _upload_path

    path = _upload_path(file)
    try:
        cfg = read_config(path)
    except ConfigError as e:
        gr.Warning(f"cannot restore settings: {e}")
        return [gr.skip() for _ in names] + ["cannot restore: the file carries no clipforge "
                                             "settings"]
    d = cfg.to_dict()
    values = []
    for n in names:
        v = d[n]
        if n == "generator_options":
            v = json.dumps(v) if v else ""
        values.append(v)
    return values + [f"restored the settings of a clipforge PNG (seed {cfg.seed})"]


def parse_auth(auth: str | tuple[str, str] | None) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; None stays None."""
    if auth is None or isinstance(auth, tuple):
        return auth
    user, sep, password = str(auth).partition(":")
    if not sep or not user or not password:
        raise ValueError("auth: expected USER:PASSWORD with both parts non-empty")
    return user, password


def launch(host: str = "127.0.0.1", port: int = 7860, auth: str | tuple[str, str] | None = None,
           share: bool = False, max_queue: int = 16, *, default_clip: str | Sequence[str] = "shapes",
           clip_choices: Sequence[str] | None = None, device: str = "auto",
           max_side: int = 1024, max_steps: int = 10_000, output_dir: str | None = None,
           max_file_size: str | int = "10mb", overrides: dict[str, Any] | None = None,
           prevent_thread_lock: bool = False, quiet: bool = False) -> gr.Blocks:
    """Serve the studio (``clipforge ui``) with safe defaults.

    Binds 127.0.0.1, no share link, monitoring and MCP off, uploads capped at
    ``max_file_size``, no extra readable paths beyond the result folder.

    Args:
        host: interface to bind; use 0.0.0.0 only behind ``auth`` or a proxy you trust.
        port: TCP port.
        auth: ``"user:password"`` to require a login.
        share: create a public gradio.live link (off by default).
        max_queue: jobs that may wait; more get "queue is full".
        default_clip: CLIP spec(s) selected at start.
        clip_choices: further CLIP specs offered.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        max_side: largest width/height a user may ask for.
        max_steps: most steps per run.
        output_dir: where result PNGs are written.
        max_file_size: largest upload (``"10mb"``).
        overrides: initial control values instead of RunConfig's defaults.
        prevent_thread_lock: return at once (the server runs in a thread), for tests/notebooks.
        quiet: print nothing at start.

    Returns:
        the launched ``gr.Blocks`` (``demo.local_url``; ``demo.close()`` stops it).
    """
    demo = build_demo(default_clip=default_clip, clip_choices=clip_choices, device=device,
                      max_queue=max_queue, max_side=max_side, max_steps=max_steps,
                      output_dir=output_dir, overrides=overrides)
    studio: Studio = demo.clipforge_studio
    # result PNGs are handed to gradio, which copies them into its cache; a folder outside the
    # temporary directory must be allowed for that copy (and only then)
    import tempfile
    from pathlib import Path

    inside_tmp = Path(tempfile.gettempdir()).resolve() in studio.output_dir.resolve().parents
    demo.launch(server_name=host, server_port=port, auth=parse_auth(auth), share=share,
                max_file_size=max_file_size, enable_monitoring=False, mcp_server=False,
                ssr_mode=False, pwa=False, show_error=False, strict_cors=True,
                allowed_paths=[] if inside_tmp else [str(studio.output_dir)], prevent_thread_lock=prevent_thread_lock,
                quiet=quiet, footer_links=["api"], css=CSS)
    return demo
