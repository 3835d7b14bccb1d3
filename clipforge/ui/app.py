"""The clipforge studio page: its layout, the wiring of its events, and :func:`launch`.

``clipforge ui`` calls :func:`launch`. The page drives the same Run as the CLI
(:class:`clipforge.runner.Run`): it streams previews, a loss plot and progress; Stop cancels and
frees the run; Pause keeps the optimizer and lets you edit prompts, weights and learning rate
before Resume. What the events do is :class:`~clipforge.ui.events.Events`; the widgets are
:mod:`clipforge.ui.controls`; the checks are :mod:`clipforge.ui.inputs`.

Sharing one GPU: every event that touches the model shares one concurrency id with limit 1,
the queue has a maximum size, input is checked by a validator *before* a job is queued, and
per-session state lives in a ``gr.State`` (:mod:`clipforge.ui.session`). The other events are
``api_visibility="private"``: hidden from the API page and refused by gradio's clients; the page
itself still calls them, so each carries the page's owner token and does nothing without it
(:mod:`clipforge.ui.events`), and gradio's ``/cancel`` answers only a job's owner
(:mod:`clipforge.ui.guard`).
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

try:
    import gradio as gr
except ImportError as _e:  # pragma: no cover - exercised by a test with gradio hidden
    raise ImportError("the clipforge studio needs gradio, which is not installed; run: "
                      "pip install 'clipforge[ui]'") from _e

from clipforge.errors import UsageError
from clipforge.ui import pnginfo_tab
from clipforge.ui.controls import CSS, HEADER, PAGE_JS, RUN_BUTTONS, control, model_note
from clipforge.ui.events import ESTIMATED, REMEMBERED, Events, closed
from clipforge.ui.guard import CONCURRENCY_ID, owns_event, waiting
from clipforge.ui.handlers import OUTPUTS
from clipforge.ui.inputs import (ADVANCED_FIELDS, IMAGE_FIELDS, RESTORABLE, TEXT_FIELDS,
                                 UI_FIELDS, ui_defaults)
from clipforge.ui.session import Session, Studio
from clipforge.ui.timing import calibrate_start, starting_values


def build_demo(*, default_clip: str | Sequence[str] = "shapes",
               clip_choices: Sequence[str] | None = None, device: str = "auto",
               max_queue: int = 16, max_side: int = 1024, max_steps: int = 10_000,
               max_cutn: int = 64, output_dir: str | None = None, overrides: dict[str, Any] | None = None,
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
        max_cutn: most cutouts per step.
        output_dir: where result PNGs go (a temporary folder by default).
        overrides: initial control values instead of the starting ones (RunConfig's defaults,
            then the recommended settings of a bundled default guide), e.g. ``{"width": 64}``.
        studio: an existing :class:`Studio` (shares its model cache); built from the above if None.

    Returns:
        the ``gr.Blocks``; ``demo.clipforge_studio`` is its :class:`Studio`.
    """
    studio = studio or Studio(default_clip=default_clip, clip_choices=clip_choices,
                              device=device, max_side=max_side, max_steps=max_steps,
                              max_cutn=max_cutn, output_dir=output_dir)
    generator = (overrides or {}).get("generator", ui_defaults()["generator"])
    initial = ui_defaults({"clip": tuple(studio.default_clip),
                           **starting_values(studio.default_clip, generator, UI_FIELDS),
                           **(overrides or {})})
    with gr.Blocks(title="clipforge studio", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        page = _layout(studio, initial)
        _wire(demo, page, Events(studio, waiting=lambda: waiting(demo)))
    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    demo.clipforge_studio, demo.clipforge_initial = studio, initial
    return demo


def _layout(studio: Studio, initial: dict[str, Any]) -> dict[str, Any]:
    """Place every component; returns them by name (settings by their field name)."""
    c: dict[str, Any] = {"session": gr.State(Session(), delete_callback=closed),
                         "owner": gr.Textbox(visible=False, elem_id="cf-owner"),
                         "timer": gr.Timer(1.0),
                         "saved": gr.BrowserState({}, storage_key="clipforge-studio")}
    gr.Markdown(HEADER)
    gr.Markdown(model_note(studio), elem_id="cf-model-note")

    def place(*names: str) -> None:
        for name in names:
            c[name] = control(name, initial, studio)

    with gr.Tabs(elem_id="cf-tabs") as c["tabs"]:
        with gr.Tab("Generate", id=pnginfo_tab.TAB_GENERATE, elem_id="cf-tab-generate"):
            _generate_tab(c, place, studio)
        with gr.Tab("PNG Info", id=pnginfo_tab.TAB_INFO, elem_id="cf-tab-pnginfo"):
            pnginfo_tab.layout(c)
    missing = (set(UI_FIELDS) | set(OUTPUTS)) - set(c)
    assert not missing, sorted(missing)
    return c


def _generate_tab(c: dict[str, Any], place, studio: Studio) -> None:
    """The Generate tab: prompts, buttons, settings on the left; the run's displays on the right."""
    with gr.Row():
        with gr.Column(scale=5):
            place(*TEXT_FIELDS)
            c["history"] = gr.Radio([], value=None, label="Prompt history (newest first; "
                                    "click one to use it again)", elem_id="cf-history")
            with gr.Row():
                # enabled once the page holds its owner token (Events.claim)
                c["generate"] = gr.Button("Generate", variant="primary", interactive=False,
                                          elem_id="cf-generate")
                c["pause"] = gr.Button("Pause", interactive=False, elem_id="cf-pause")
                c["resume"] = gr.Button("Resume", visible=False, variant="primary",
                                        elem_id="cf-resume")
                c["stop"] = gr.Button("Stop", variant="stop", interactive=False,
                                      elem_id="cf-stop")
                c["cancel"] = gr.Button("Cancel", variant="stop", visible=False,
                                        elem_id="cf-cancel")
            c["estimate"] = gr.Markdown("", elem_id="cf-estimate")
            c["message"] = gr.Markdown("", elem_id="cf-message")
            with gr.Row():
                place("clip", "generator")
            place("generator_options")
            for row in (("width", "height", "steps"), ("lr", "cutn")):
                with gr.Row():
                    place(*row)
            with gr.Row():
                place("seed")
                c["randomize"] = gr.Button("Random seed", size="sm", elem_id="cf-randomize")
                c["last_seed"] = gr.Button("Last seed", size="sm", elem_id="cf-last-seed")
            with gr.Row():
                place("batch_count", "save_video")
            place("preview_every")
            with gr.Accordion("Image prompts and init image", open=False) as c["images_box"]:
                place(*IMAGE_FIELDS)
            with gr.Accordion("More settings", open=False):
                place(*ADVANCED_FIELDS)
            c["restore"] = gr.File(label="Drop a clipforge or A1111 PNG here to restore its "
                                   "settings",
                                   file_types=[".png"], height=120, elem_id="cf-restore")
        with gr.Column(scale=6):
            c["preview"] = gr.Image(label="Preview", type="pil", format="png",
                                    interactive=False, height=384, elem_id="cf-preview")
            c["status"] = gr.Markdown("idle", elem_id="cf-status")
            c["progress"] = gr.HTML("", elem_id="cf-progress")
            c["plot"] = gr.LinePlot(None, x="step", y="loss", color="part", title="Loss parts",
                                    height=220, elem_id="cf-plot")
            c["download"] = gr.File(label="Result PNG (settings embedded)", interactive=False,
                                    elem_id="cf-download")
            c["video"] = gr.Video(label="Progress video (MP4)", interactive=False, height=220,
                                  buttons=["download"], elem_id="cf-video")
            c["gallery"] = gr.Gallery(label=f"Your results (saved in {studio.output_dir})",
                                      columns=4, height=220, elem_id="cf-gallery")


def _wire(demo: gr.Blocks, c: dict[str, Any], h: Events) -> None:
    """Connect the buttons to the handlers: Generate is the one public endpoint."""
    session, owner, outputs = c["session"], c["owner"], [c[n] for n in OUTPUTS]
    model = dict(concurrency_id=CONCURRENCY_ID, concurrency_limit=1, trigger_mode="once",
                 show_progress="minimal", show_progress_on=[c["preview"]])
    private = dict(queue=False, api_visibility="private")
    api_names = [*UI_FIELDS, "owner", "session"]
    gen_event = c["generate"].click(
        _named(h.generate, api_names), [*(c[n] for n in UI_FIELDS), owner, session], outputs,
        validator=_named(h.validate, api_names), api_name="generate",
        api_description="Run one generation; streams previews, loss plot and progress, "
                        "then the result PNG (settings embedded). Leave owner empty.", **model)
    mine = [owner, session]
    steer = [c["prompt"], c["negative_prompt"], c["lr"], c["preview_every"], owner, session]
    resume_event = c["resume"].click(h.resume, steer, outputs, validator=h.validate_steer,
                                     api_visibility="private", **model)
    estimate = dict(fn=h.estimate, inputs=[*(c[n] for n in UI_FIELDS), *mine],
                    outputs=c["estimate"], show_progress="hidden", **private)
    demo.load(h.opened, [c["saved"], session],
              [owner, c["generate"], c["saved"], c["gallery"], c["history"],
               *(c[n] for n in REMEMBERED)], **private).then(**estimate)
    for name in ESTIMATED:
        c[name].change(**estimate)
    pnginfo_tab.wire(c, h, **private)
    c["generate"].click(h.remember, [*(c[n] for n in REMEMBERED), c["saved"], *mine],
                        [c["saved"], c["history"]], **private)
    c["history"].input(h.pick_history, c["history"], c["prompt"], **private)
    c["pause"].click(h.pause, mine, [c["pause"]], **private)
    c["stop"].click(h.stop, mine, outputs, **private)
    c["cancel"].click(h.cancel, mine, outputs, cancels=[gen_event, resume_event], **private)
    c["timer"].tick(h.queue_place, mine, [c["status"], *(c[n] for n in RUN_BUTTONS)],
                    show_progress="hidden", **private)
    c["randomize"].click(h.randomize, mine, c["seed"], **private)
    c["last_seed"].click(h.last_seed, mine, c["seed"], **private)
    c["generator"].change(h.generator_changed, c["generator"],
                          [c["generator"], c["generator_options"]], **private)
    c["restore"].upload(h.restore, [c["restore"], *mine],
                        [c[n] for n in RESTORABLE] + [c["status"]], **private)


def _named(method, names: Sequence[str]):
    """``method(*values)`` as a function whose parameters carry these names (the API page's)."""
    if inspect.isgeneratorfunction(method):
        def call(*args):
            yield from method(*args)
    else:
        def call(*args):
            return method(*args)
    call.__name__ = method.__name__
    # the owner token (and the session after it) are optional: API clients send none
    optional = list(names).index("owner") if "owner" in names else len(names)
    call.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           **({"default": None} if i >= optional else {}))
         for i, n in enumerate(names)])
    return call


def parse_auth(auth: str | tuple[str, str] | None) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; None stays None.

    Args:
        auth: the login from ``--auth`` (the password may hold ``:``), a pair, or None.

    Raises:
        UsageError: (field ``auth``) not USER:PASSWORD with both parts non-empty.
    """
    if auth is None or isinstance(auth, tuple):
        return auth
    user, sep, password = str(auth).partition(":")
    if not sep or not user or not password:
        raise UsageError("auth: expected USER:PASSWORD with both parts non-empty", "auth")
    return user, password


def launch(host: str = "127.0.0.1", port: int = 7860, auth: str | tuple[str, str] | None = None,
           share: bool = False, max_queue: int = 16, *, default_clip: str | Sequence[str] = "shapes",
           clip_choices: Sequence[str] | None = None, device: str = "auto",
           max_side: int = 1024, max_steps: int = 10_000, max_cutn: int = 64,
           output_dir: str | None = None,
           max_file_size: str | int = "10mb", overrides: dict[str, Any] | None = None,
           prevent_thread_lock: bool = False, quiet: bool = False,
           calibrate: bool = True) -> gr.Blocks:
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
        max_cutn: most cutouts per step.
        output_dir: where result PNGs are written (its path is shown on the page).
        max_file_size: largest upload (``"10mb"``).
        overrides: initial control values instead of RunConfig's defaults.
        prevent_thread_lock: return at once (the server runs in a thread), for tests/notebooks.
        quiet: print nothing at start.
        calibrate: time a few steps of the starting settings now (the page's "about N s"
            before the first run; the default models are then loaded for it).

    Returns:
        the launched ``gr.Blocks`` (``demo.local_url``; ``demo.close()`` stops it).
    """
    import tempfile
    from pathlib import Path

    from starlette.middleware import Middleware

    from clipforge.ui.guard import OwnedCancel

    credentials = parse_auth(auth)  # a bad login is refused before anything is built
    demo = build_demo(default_clip=default_clip, clip_choices=clip_choices, device=device,
                      max_queue=max_queue, max_side=max_side, max_steps=max_steps,
                      max_cutn=max_cutn,
                      output_dir=output_dir, overrides=overrides)
    studio: Studio = demo.clipforge_studio
    if calibrate:
        calibrate_start(studio, demo.clipforge_initial)
    # result PNGs are handed to gradio, which copies them into its cache; a folder outside the
    # temporary directory must be allowed for that copy (and only then)
    inside_tmp = Path(tempfile.gettempdir()).resolve() in studio.output_dir.resolve().parents
    demo.launch(server_name=host, server_port=port, auth=credentials, share=share,
                max_file_size=max_file_size, enable_monitoring=False, mcp_server=False,
                ssr_mode=False, pwa=False, show_error=False, strict_cors=True,
                allowed_paths=[] if inside_tmp else [str(studio.output_dir)],
                prevent_thread_lock=prevent_thread_lock, quiet=quiet, footer_links=["api"],
                css=CSS, js=PAGE_JS, app_kwargs={"middleware": [Middleware(
                    OwnedCancel, owned=lambda h, e: owns_event(demo, h, e))]})
    return demo
