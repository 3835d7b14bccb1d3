"""The clipforge studio (Gradio): ``clipforge ui`` serves :func:`clipforge.ui.app.launch`.

- ``app``: layout, wiring and launch; ``controls``: widgets derived from RunConfig's fields;
  ``handlers``: what each event does. These three import gradio (the ``ui`` extra:
  ``pip install 'clipforge[ui]'``).
- ``inputs``: page values -> RunConfig and the studio's checks; ``session``: ``Studio`` (one per
  server) and ``Session`` (one per tab); ``live``: the pausable, steerable run. These three
  do not import gradio, so they are usable and testable without it.
"""
