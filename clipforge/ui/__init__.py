"""The clipforge studio (Gradio): ``clipforge ui`` serves :func:`clipforge.ui.app.launch`.

- ``app``: layout, wiring and launch; ``controls``: widgets derived from RunConfig's fields;
  ``handlers``: streaming one run; ``jobs``: Generate and Resume (a batch of runs);
  ``events``: the small events (pause, stop, cancel, the queue place, the estimate), each only
  for the page owning the session; ``pnginfo_tab``: the PNG Info tab. These import gradio
  (the ``ui`` extra: ``pip install 'clipforge[ui]'``).
- ``inputs``: page values -> RunConfig and the studio's checks; ``uploads``: the file checks;
  ``session``: ``Studio`` (one per server) and ``Session`` (one per tab); ``live``: the
  pausable, steerable run; ``timing``: starting values and measured step times; ``pnginfo``:
  what a PNG carries; ``guard``: who owns a queued job (only the owner cancels it over
  gradio's ``/cancel``). These do not import gradio, so they are usable and testable without
  it.
"""
