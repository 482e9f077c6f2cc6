"""`lmforge webui`: a local Gradio app with a Chat tab (any run or model folder, streamed answers)
and a Training tab (a form built from a stage's config dataclasses that launches
`lmforge train STAGE` as a subprocess and shows its log and live loss curve).

Gradio is imported only by app.py, chat_tab.py and train_tab.py; the rest (form model, job
control, run discovery) is plain Python and importable without the `[webui]` extra.
"""
