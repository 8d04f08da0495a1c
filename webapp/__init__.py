"""The web layer of the Pronunciation Coach: everything that knows about Gradio.

`apa` scores recordings and knows nothing of the web; `app.py` is the command line and the
module-level `demo`. Here: the scorer holder (`scorer`), Gradio's upload internals (`uploads`),
the per-session audio cache (`session`), reference audio (`tts`), the handlers (`handlers`),
the page (`layout`) and what keeps the server from being turned against others (`security`).
"""
