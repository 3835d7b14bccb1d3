"""The clipforge studio (Gradio): ``clipforge ui`` serves :func:`clipforge.ui.app.launch`.

- ``app``: layout, wiring and launch; ``controls``: widgets derived from RunConfig's fields;
  ``handlers``: Generate and Resume; ``events``: the small events (pause, stop, cancel, the
  queue place), each only for the page owning the session. These import gradio (the ``ui``
  extra: ``pip install 'clipforge[ui]'``).
- ``inputs``: page values -> RunConfig and the studio's checks; ``session``: ``Studio`` (one per
  server) and ``Session`` (one per tab); ``live``: the pausable, steerable run; ``guard``: lets
  only a job's owner cancel it over gradio's ``/cancel``. These do not import gradio, so they
  are usable and testable without it.
"""
