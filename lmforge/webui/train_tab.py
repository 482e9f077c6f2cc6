"""The Training tab: a form built from the chosen stage's config (forms.py), Start / Stop of an
`lmforge train` subprocess (jobs.py), and a `gr.Timer` that refreshes its status, log and loss
curve once a second while it runs.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from lmforge.errors import LmforgeError
from lmforge.webui.forms import (
    MAIN_FIELDS,
    STAGE_SECTION,
    FormField,
    all_fields,
    form_flags,
    form_values,
    plan_run,
    stage_defaults,
    stage_names,
)
from lmforge.webui.guard import Access
from lmforge.webui.jobs import JobBoard, read_metrics

SECTIONS = ("Model", "Data", "Run", "Tuner")  # FormField.section of the shared config groups
REFRESH_S = 1.0


def _component(f: FormField, value, visible: bool = True):
    common = {
        "label": f.name,
        "info": f.help,
        "visible": visible,
        "elem_id": f"field-{f.name}",
        "min_width": 240,
    }
    if f.kind == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if f.kind in ("tristate", "choice"):
        options = ["true", "false"] if f.kind == "tristate" else list(f.choices)
        choices = ([("(default)", "")] if f.optional else []) + [(c, c) for c in options]
        return gr.Dropdown(choices=choices, value=value, **common)
    if f.kind in ("int", "float"):
        return gr.Number(value=value, precision=0 if f.kind == "int" else None, **common)
    return gr.Textbox(value=value, lines=1, **common)


def _stage_doc(stage: str) -> str:
    from lmforge.stages import get_stage

    doc = (get_stage(stage).__doc__ or "").strip().split("\n\n")[0]
    return f"**{stage}**: {' '.join(doc.split())}"


def _has_options(stage: str) -> bool:
    return any(stage in f.stages for f in all_fields().values())


def _loss_frame(records: list[dict]) -> pd.DataFrame:
    rows = [
        {"step": r["step"], "loss": r[key], "series": key}
        for key in ("loss", "eval_loss")
        for r in records
        if isinstance(r.get(key), (int, float)) and "step" in r
    ]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


def _summary(records: list[dict]) -> str:
    train = [r for r in records if isinstance(r.get("loss"), (int, float))]
    if not train:
        return "metrics: none yet"
    last = train[-1]
    return f"metrics: {len(train)} steps logged; last loss {last['loss']:.4f} at step {last['step']}"


def build_train_tab(board: JobBoard, runs_dir: str, access: Access | None = None):
    """The tab's components and events; returns (refresh function, its outputs) for app.load."""
    fields = all_fields()
    first = stage_names()[0]
    initial = form_values(first)
    comps: dict[str, gr.components.Component] = {}

    def place(names: list[str]) -> None:
        with gr.Row():
            for name in names:
                f = fields[name]
                comps[name] = _component(f, initial[name], f.shown_for(first))

    stage = gr.Dropdown(stage_names(), value=first, label="stage", elem_id="train-stage")
    stage_doc = gr.Markdown(_stage_doc(first))
    shown_stage = gr.State(first)
    place(list(MAIN_FIELDS))
    stage_only = [n for n, f in fields.items() if f.section == STAGE_SECTION]
    with gr.Accordion("Stage options", open=True, visible=_has_options(first)) as stage_box:
        place(stage_only)
    for section in SECTIONS:
        with gr.Accordion(f"{section} options", open=False):
            place([n for n, f in fields.items() if f.section == section])
    with gr.Accordion("Trainer options (Hugging Face TrainingArguments)", open=False):
        place([n for n, f in fields.items() if f.section == "Trainer"])
        extra = gr.Textbox(
            label="extra flags",
            info="Any other `lmforge train` flag, as on the command line: --warmup_steps 10 --optim adamw_torch",
            elem_id="train-extra",
        )
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="train-start")
        stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
        preview = gr.Button("Show command", elem_id="train-preview")
    status = gr.Textbox(label="status", interactive=False, elem_id="train-status")
    cli = gr.Textbox(label="equivalent command", interactive=False, buttons=["copy"], elem_id="train-cli")
    with gr.Row():
        log = gr.Textbox(
            label="log", lines=16, max_lines=16, autoscroll=True, interactive=False, elem_id="train-log"
        )
        with gr.Column():
            plot = gr.LinePlot(
                _loss_frame([]), x="step", y="loss", color="series", label="loss", elem_id="train-loss"
            )
            summary = gr.Markdown(_summary([]), elem_id="train-metrics")
    timer = gr.Timer(REFRESH_S, active=False)
    names = list(comps)

    def switch_stage(old: str, new: str, *values):
        before, after = form_values(old), form_values(new)
        updates = []
        for name, value in zip(names, values):
            visible = fields[name].shown_for(new)
            if value == before[name]:  # untouched: follow the new stage's default
                updates.append(gr.update(value=after[name], visible=visible))
            else:
                updates.append(gr.update(visible=visible))
        return [*updates, new, _stage_doc(new), gr.Accordion(visible=_has_options(new))]

    def switch_tuner(stage_name: str, tuner: str, lr):
        rates = {stage_defaults(stage_name, t)["learning_rate"] for t in ("full", "lora")}
        if lr in rates:  # the user kept a default rate: follow the tuner's
            return stage_defaults(stage_name, tuner)["learning_rate"]
        return gr.update()

    def plan(stage_name: str, values: tuple, extra_flags: str):
        flags = form_flags(stage_name, dict(zip(names, values)), extra_flags)
        return plan_run(stage_name, flags, runs_dir, access)

    def do_preview(stage_name, *rest):
        try:
            p = plan(stage_name, rest[:-1], rest[-1])
        except LmforgeError as e:
            return f"error: {e}", gr.Textbox()
        return "command ok (not started)", p.cli

    def do_start(stage_name, *rest):
        try:
            p = plan(stage_name, rest[:-1], rest[-1])
            job = board.start(p.argv, p.run_dir, p.cli)
        except LmforgeError as e:
            return f"error: {e}", gr.Textbox(), gr.Textbox(), gr.LinePlot(), gr.Markdown(), gr.Timer()
        return job.status(), p.cli, job.log.text(), _loss_frame([]), _summary([]), gr.Timer(active=True)

    def do_stop():
        job = board.stop()
        return job.status() if job else "no run to stop"

    def refresh():
        job = board.job
        if job is None:
            return "no run yet", "", _loss_frame([]), _summary([]), gr.Timer(active=False)
        done = job.finished()  # read before the metrics, so the last refresh sees the final ones
        records = read_metrics(job.run_dir)
        return (
            job.status(),
            job.log.text(),
            _loss_frame(records),
            _summary(records),
            gr.Timer(active=not done),
        )

    form = [stage, *comps.values(), extra]
    stage.change(
        switch_stage,
        [shown_stage, stage, *comps.values()],
        [*comps.values(), shown_stage, stage_doc, stage_box],
    )
    comps["tuner"].change(
        switch_tuner, [stage, comps["tuner"], comps["learning_rate"]], comps["learning_rate"]
    )
    preview.click(do_preview, form, [status, cli])
    start.click(do_start, form, [status, cli, log, plot, summary, timer])
    stop.click(do_stop, None, status)
    refresh_outputs = [status, log, plot, summary, timer]
    timer.tick(refresh, None, refresh_outputs, show_progress="hidden")
    return refresh, refresh_outputs
