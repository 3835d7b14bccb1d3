"""The clipforge studio (Gradio). ``clipforge.ui.app`` needs the ``ui`` extra:
``pip install 'clipforge[ui]'``; ``clipforge.ui.studio`` (the engine behind it) does not."""
