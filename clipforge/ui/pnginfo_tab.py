"""The studio's PNG Info tab: drop any PNG, see its text and settings, send them on.

Like A1111's PNG Info: a dropped PNG (clipforge's, or one A1111 wrote) shows its picture, every
text chunk and the settings they give (:mod:`clipforge.ui.pnginfo`). **Send to generate** fills
the Generate tab's controls with those settings (only those it carries) and switches to it;
**Send to init image** puts the picture in the init-image input. Each event is private and
carries the page's owner token, as every small event of the page does.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from clipforge.ui.controls import restore_controls
from clipforge.ui.inputs import RESTORABLE
from clipforge.ui.pnginfo import read_info
from clipforge.ui.uploads import upload_path

TAB_GENERATE, TAB_INFO = "generate", "pnginfo"


def layout(c: dict[str, Any]) -> None:
    """Place the tab's components into ``c`` (inside an open ``gr.Tab``)."""
    with gr.Row():
        with gr.Column(scale=4):
            c["info_file"] = gr.File(label="Drop a PNG (clipforge's or A1111's)",
                                     file_types=[".png"], height=120, elem_id="cf-info-file")
            c["info_image"] = gr.Image(label="Picture", type="filepath", interactive=False,
                                       height=256, elem_id="cf-info-image")
            with gr.Row():
                c["send_generate"] = gr.Button("Send to generate", elem_id="cf-send-generate")
                c["send_init"] = gr.Button("Send to init image", elem_id="cf-send-init")
        with gr.Column(scale=6):
            c["info_summary"] = gr.Markdown("", elem_id="cf-info-summary")
            c["info_text"] = gr.Textbox(label="Text chunks", lines=8, interactive=False,
                                        elem_id="cf-info-text")
            c["info_settings"] = gr.JSON(label="Settings it gives", elem_id="cf-info-settings")


def wire(c: dict[str, Any], h, **private: Any) -> None:
    """Connect the tab's events (``h``: the page's :class:`~clipforge.ui.events.Events`)."""
    mine = [c["owner"], c["session"]]
    c["info_file"].upload(lambda f, o, s: inspect(h, f, o, s), [c["info_file"], *mine],
                          [c["info_image"], c["info_summary"], c["info_text"],
                           c["info_settings"]], **private)
    c["info_file"].clear(lambda: (None, "", "", None), None,
                         [c["info_image"], c["info_summary"], c["info_text"], c["info_settings"]],
                         **private)
    c["send_generate"].click(lambda f, o, s: send_to_generate(h, f, o, s),
                             [c["info_file"], *mine],
                             [*(c[n] for n in RESTORABLE), c["status"], c["tabs"]], **private)
    c["send_init"].click(lambda f, o, s: send_to_init(h, f, o, s), [c["info_file"], *mine],
                         [c["init_image"], c["images_box"], c["status"], c["tabs"]], **private)


def inspect(h, file, owner, sess) -> tuple:
    """The picture, a summary, the text chunks and the settings of a dropped PNG."""
    if not h._owned(sess, owner, "read a PNG"):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    path = upload_path(file)
    info = read_info(path)
    return (path if info.readable else None, info.describe(), info.text(),
            info.settings or None)


def send_to_generate(h, file, owner, sess) -> list:
    """The dropped PNG's settings into the Generate tab's controls; switch to that tab."""
    if not h._owned(sess, owner, "send settings") or upload_path(file) is None:
        return [gr.skip() for _ in RESTORABLE] + [gr.skip(), gr.skip()]
    return restore_controls(file, RESTORABLE) + [gr.Tabs(selected=TAB_GENERATE)]


def send_to_init(h, file, owner, sess) -> tuple:
    """The dropped PNG as the init image (its accordion opened); switch to the Generate tab."""
    path = upload_path(file)
    if not h._owned(sess, owner, "send the init image") or path is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return (path, gr.Accordion(open=True), "the PNG Info picture is the init image",
            gr.Tabs(selected=TAB_GENERATE))
