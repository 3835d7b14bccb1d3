"""The studio's widgets, derived from RunConfig's fields: labels, help, ranges and defaults.

A control's help text, allowed range and choices come from the field's metadata
(:mod:`clipforge.config`), so a default or a limit exists once; only the labels and the few
page-only controls (uploads, the image prompt weight, the preview interval) are written here.
Number boxes carry no minimum or maximum: an out-of-range value reaches the validator, which
names the setting and the allowed range instead of gradio's generic error. Also here: the
states of the run buttons (and the settings locked while paused), and control values restored from a dropped clipforge PNG.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import gradio as gr

from clipforge.config import FIELDS, field_help
from clipforge.errors import UsageError
from clipforge.fields import range_text
from clipforge.ui.inputs import MAX_BATCH_COUNT, MAX_PREVIEW_EVERY, studio_limits
from clipforge.ui.uploads import upload_path
from clipforge.ui.session import Studio, bundled_present

# previews are small images: show them large, with crisp pixels
CSS = ("#cf-preview img { image-rendering: pixelated; width: 100%; height: 100%; "
       "object-fit: contain; } #cf-progress progress { width: 70%; height: 14px; "
       "vertical-align: middle; }")

# runs once in the page: Ctrl+Enter (Cmd+Enter) presses Generate; the tab's title carries the
# progress ("step 12/50 · clipforge studio"), so a run can be followed from another tab
PAGE_JS = """
() => {
  const title = "clipforge studio";
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
      const b = document.querySelector("#cf-generate");
      if (b && !b.disabled) { e.preventDefault(); b.click(); }
    }
  });
  setInterval(() => {
    const s = document.querySelector("#cf-status");
    const text = s ? s.innerText.trim() : "";
    const m = text.match(/^(\\w+) · step (\\d+)\\/(\\d+)/);
    const q = text.match(/^queued: place (\\d+) of (\\d+)/);
    const t = m ? `${m[1]} ${m[2]}/${m[3]} · ${title}` : q ? `queued ${q[1]}/${q[2]} · ${title}`
      : title;
    if (document.title !== t) document.title = t;
  }, 250);
}
"""

LABELS = {
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "clip": "CLIP model(s)",
    "generator": "Generator", "generator_options": "Generator options (JSON)",
    "width": "Width", "height": "Height", "steps": "Steps", "lr": "Learning rate",
    "cutn": "Cutouts", "seed": "Seed", "preview_every": "Preview every k steps",
    "batch_count": "Batch count", "save_video": "Progress video (MP4)",
    "init_image": "Init image", "init_weight": "Init image weight",
    "image_prompts": "Image prompts", "image_prompt_weight": "Image prompt weight",
    "optimizer": "Optimizer", "schedule": "LR schedule", "warmup_steps": "Warm-up steps",
    "cut_pow": "Cutout size exponent", "augment": "Augment cutouts",
    "tv_weight": "Smoothness (TV) weight", "range_weight": "Range loss weight",
}

HEADER = """# clipforge studio
Type a prompt and press **Generate**: an image is pushed, step by step, toward what a CLIP
model sees in your words. **Pause** to edit the prompt, its `:weights` or the learning rate,
then **Resume** — the optimizer keeps its state. Drop a clipforge (or A1111) PNG below to
restore its settings, or read one in **PNG Info**. Prompt syntax:
`a red circle:1.5 | a blue background | noise:-0.5`."""


def model_note(studio: Studio) -> str:
    """The line under the header that says which CLIP model runs by default.

    Args:
        studio: its default models.
    """
    present = bundled_present()
    if "shapes" in studio.default_clip and "shapes" in present:
        return ("Runs offline with the bundled **shapes** CLIP, a small model clipforge trains "
                "on captioned shapes (\"a red circle on a blue background\"): it knows colours "
                "and simple shapes, not photographs. Larger open_clip models can be chosen by "
                "name:tag where this server can load them.")
    if "shapes" not in present:
        return (f"The bundled **shapes** model is not installed here; the default model is "
                f"`{', '.join(studio.default_clip)}`.")
    return f"Default model: `{', '.join(studio.default_clip)}`."


def control(name: str, initial: dict[str, Any], studio: Studio) -> gr.components.Component:
    """A component for one setting, from the RunConfig field's help, range and default.

    Args:
        name: the setting (one of :data:`clipforge.ui.inputs.UI_FIELDS`); ``cf-NAME`` is its
            element id.
        initial: every control's initial value (:func:`clipforge.ui.inputs.ui_defaults`).
        studio: the limits and offered models the help text states.
    """
    value = initial.get(name)
    label, help_, elem_id = LABELS.get(name, name), field_help().get(name, ""), f"cf-{name}"
    if name in ("prompt", "negative_prompt"):
        # no max_length: the browser would cut a long paste silently; the validator refuses it
        return gr.Textbox(value=value, label=label, info=help_, lines=2, elem_id=elem_id,
                          placeholder="a red circle on a blue background:1.5 | blurry:-0.5"
                          if name == "prompt" else "")
    if name == "clip":
        here = ("This studio accepts the listed models" + (" and open_clip ARCH:TAG names"
                if studio.allow_pretrained else "") + "; `@W` weights a member of an ensemble.")
        return gr.Dropdown(choices=list(studio.clip_choices), value=list(value), multiselect=True,
                           allow_custom_value=True, label=label, info=here, elem_id=elem_id)
    if name == "generator":
        from clipforge import registry

        return gr.Dropdown(choices=list(registry.GENERATORS), value=value, label=label,
                           info=generator_info(value), elem_id=elem_id)
    if name == "generator_options":
        return gr.Textbox(value=json.dumps(value) if value else "", label=label,
                          info=options_info(initial["generator"]), elem_id=elem_id,
                          placeholder="{} = the generator's defaults")
    if name in ("init_image", "image_prompts"):
        return gr.File(label=label, file_types=["image"], elem_id=elem_id,
                       file_count="single" if name == "init_image" else "multiple")
    if name == "image_prompt_weight":
        return gr.Number(value=value, label=label, info="Weight of each image prompt "
                         "(negative steers away).", elem_id=elem_id)
    if name == "batch_count":
        return gr.Number(value=value, label=label, precision=0, elem_id=elem_id,
                         info=f"Images per Generate, seeds k, k+1, ... (1..{MAX_BATCH_COUNT}).")
    if name == "save_video":
        return gr.Checkbox(value=value, label=label, elem_id=elem_id,
                           info="Keep a frame every preview interval; the run's MP4 (and GIF) "
                                "is written beside its PNG and shown after the run.")
    if name == "preview_every":
        return gr.Slider(1, 50, value=value, step=1, label=label, elem_id=elem_id,
                         info=f"Send a preview and loss point every k steps (1..50 here, "
                              f"up to {MAX_PREVIEW_EVERY} through the API).")
    meta = FIELDS[name].metadata
    if "choices" in meta:
        return gr.Dropdown(choices=list(meta["choices"]), value=value, label=label, info=help_,
                           elem_id=elem_id)
    if isinstance(FIELDS[name].default, bool):
        return gr.Checkbox(value=value, label=label, info=help_, elem_id=elem_id)
    here = studio_limits(studio).get(name)
    allowed = f"{here[0]}..{here[1]} in this studio" if here else range_text(meta)
    info = help_ + (f" Allowed: {allowed}." if allowed else "")
    return gr.Number(value=value, label=label, info=info, elem_id=elem_id)


PLOT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf")


def plot_update(frame):
    """The loss plot's update for ``frame`` (step, part, loss), with a colour for every part.

    The plot keeps the series it first drew unless its ``color_map`` changes, so naming every
    part (in order of appearance) makes the parts a steered prompt adds appear after Resume.
    """
    if frame is None:
        return gr.update(value=None)
    parts = list(dict.fromkeys(frame["part"]))
    return gr.update(value=frame, colors_in_legend=parts,
                     color_map={p: PLOT_COLORS[i % len(PLOT_COLORS)] for i, p in enumerate(parts)})


def generator_info(name: str) -> str:
    """The generator's one-line summary, for the dropdown's help."""
    from clipforge import registry

    spec = registry.GENERATORS.get(name)
    return f"{spec.summary}" if spec else "Generator name."


def options_info(name: str) -> str:
    """The generator's options and their defaults, for the options box's help."""
    from clipforge import registry

    try:
        opts = registry.generator_options(name)
    except UsageError as e:
        return str(e)
    return "Options and defaults: " + (json.dumps(opts, default=str) if opts else "none")


# what a page state updates, in this order: the five run buttons, then the settings that
# cannot change while a run is paused (the steerable ones are the prompts, lr, preview interval)
RUN_BUTTONS = ("generate", "pause", "resume", "stop", "cancel")
LOCKED_WHILE_PAUSED = ("clip", "generator", "generator_options", "width", "height", "steps",
                       "cutn", "seed", "batch_count", "save_video", "init_image", "init_weight",
                       "image_prompts", "image_prompt_weight", "optimizer", "schedule",
                       "warmup_steps", "cut_pow", "augment", "tv_weight", "range_weight")
STATE_OUTPUTS = RUN_BUTTONS + LOCKED_WHILE_PAUSED
PAGE_STATES = ("idle", "queued", "running", "paused")


def page_state(state: str, resumable: bool = True) -> tuple:
    """Updates of :data:`STATE_OUTPUTS` for a page in ``state``.

    Generate is off unless idle (a paused run is Resumed or Stopped first, never dropped
    silently); Pause is offered only to runs that can pause (not diffusion); Cancel shows while
    the job waits in the queue; the settings a paused run cannot change are locked.

    Args:
        state: one of :data:`PAGE_STATES`.
        resumable: the running job can pause.
    """
    assert state in PAGE_STATES, state
    running, paused, queued = state == "running", state == "paused", state == "queued"
    locked = gr.update(interactive=not paused)
    return (gr.update(interactive=state == "idle"),
            gr.update(interactive=running and resumable, visible=not paused),
            gr.update(visible=paused, interactive=paused),
            gr.update(interactive=running or paused, visible=not queued),
            gr.update(visible=queued, interactive=queued),
            *(locked for _ in LOCKED_WHILE_PAUSED))


def restore_controls(file, names: Sequence[str]) -> list[Any]:
    """Settings from a dropped PNG (clipforge's or A1111's), as values of the controls
    ``names`` (those it does not set are left as they are), then a status line.

    Args:
        file: the upload (a path or gradio's file object).
        names: the controls to fill, in order.
    """
    from clipforge.ui.pnginfo import control_values, read_info

    info = read_info(upload_path(file))
    if not info.settings:
        gr.Warning(f"cannot restore settings: {info.problem}")
        return [gr.skip() for _ in names] + ["cannot restore: the file carries no clipforge "
                                             "or A1111 settings"]
    values = control_values(info, names)
    return [values.get(n, gr.skip()) for n in names] + [f"restored the settings of "
                                                        f"{info.describe()}"]
