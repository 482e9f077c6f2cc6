"""Run folders: layout, the resolved config, resume discovery, atomic writes, metrics and plots.

A run folder (``--output_dir``, default ``out/<stage>-<yyyymmdd-hhmmss>``) holds::

    checkpoint-N/          complete checkpoints only (written to a staging folder, then renamed)
    .staging-PID/          a checkpoint being written by process PID (removed once PID is gone)
    config.json, model.safetensors, tokenizer files, generation_config.json   the final model
    lmforge_args.yaml      the fully resolved config (re-run with `lmforge train STAGE lmforge_args.yaml`)
    metrics.jsonl          one JSON line per optimizer step (exact float losses) and per eval
    loss.png               training (and validation) loss curves
    README.md              model card
    lmforge_finished.json  written last: the run is complete (pipelines skip finished stages)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ARGS_FILE = "lmforge_args.yaml"
METRICS_FILE = "metrics.jsonl"
FINISHED_FILE = "lmforge_finished.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
# Leftovers of a checkpoint save, named after the saving process: `.staging-PID` (being written)
# and `.trash-checkpoint-N-PID` (a replaced checkpoint being deleted).
_LEFTOVER = re.compile(r"^\.(?:staging|trash-checkpoint-\d+)-(\d+)$")


def default_output_dir(stage: str, save_dir: str = "out") -> str:
    # under `lmforge.launch` every rank reads the launcher's stamp, so all pick the same folder
    stamp = os.environ.get("LMFORGE_RUN_STAMP") or time.strftime("%Y%m%d-%H%M%S")
    return str(Path(save_dir) / f"{stage}-{stamp}")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first. Staging folders (`.staging-*`) are never listed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for child in run_dir.iterdir():
        m = _CKPT.match(child.name)
        if m and child.is_dir() and (child / "trainer_state.json").exists():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> str | None:
    ckpts = list_checkpoints(run_dir)
    return str(ckpts[-1]) if ckpts else None


def latest_run_dir(save_dir: str, stage: str) -> str | None:
    """The newest `save_dir/<stage>-*` folder that holds a checkpoint (for `--from_resume 1`)."""
    base = Path(save_dir)
    if not base.is_dir():
        return None
    runs = sorted(
        (p for p in base.glob(f"{stage}-*") if p.is_dir() and list_checkpoints(p)), key=lambda p: p.name
    )
    return str(runs[-1]) if runs else None


def write_args(run_dir: str | Path, values: dict[str, Any]) -> None:
    import yaml

    clean = {k: v for k, v in values.items() if _yamlable(v)}
    atomic_write_text(Path(run_dir) / ARGS_FILE, yaml.safe_dump(clean, sort_keys=False, allow_unicode=True))


def _yamlable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, dict))


def read_run_args(path: str | Path) -> dict[str, Any]:
    """The resolved config of the run that `path` (run folder or checkpoint in it) belongs to."""
    import yaml

    path = Path(path)
    for cand in (path, path.parent):
        f = cand / ARGS_FILE
        if f.is_file():
            return yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    return {}


def mark_finished(run_dir: str | Path, info: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / FINISHED_FILE, json.dumps(info, indent=2))


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / FINISHED_FILE).is_file()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (another user's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(run_dir: str | Path) -> list[Path]:
    """Delete the staging and trash folders in `run_dir` left by saves whose process is gone (a
    kill mid-save); folders of live processes, this one included, are kept. Returns those removed."""
    run_dir = Path(run_dir)
    try:
        children = list(run_dir.iterdir())
    except OSError:
        return []
    removed = []
    for child in children:
        m = _LEFTOVER.match(child.name)
        if m and child.is_dir() and not child.is_symlink() and not pid_alive(int(m.group(1))):
            shutil.rmtree(child, ignore_errors=True)
            if not child.exists():
                removed.append(child)
    if removed:
        import logging

        names = ", ".join(p.name for p in removed)
        logging.getLogger("lmforge").info(
            "removed leftovers of an interrupted save in %s: %s", run_dir, names
        )
    return removed


def promote_staged_checkpoint(staged: Path, final: Path) -> None:
    """Move a fully written checkpoint into place; a previous folder of that name is replaced."""
    if final.exists():
        trash = final.with_name(f".trash-{final.name}-{os.getpid()}")
        os.replace(final, trash)
        os.replace(staged, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staged, final)


def check_output(out: Path, overwrite: bool) -> None:
    """A command's `--output_dir` must be absent or empty unless `--overwrite true`."""
    from lmforge.errors import LmforgeError

    if out.exists() and not out.is_dir():
        raise LmforgeError(f"--output_dir {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise LmforgeError(f"--output_dir {out} exists and is not empty; pass --overwrite true to replace it")


@contextlib.contextmanager
def staged_folder(out: Path, overwrite: bool, info: dict[str, Any]) -> Iterator[Path]:
    """A fresh `OUT.tmp-<pid>` to write into; marked finished and renamed to `out` only when the
    block succeeds, so a half-written output folder is never taken for a good one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        mark_finished(tmp, info)
        check_output(out, overwrite)  # something may have appeared there while we worked
        promote_staged_checkpoint(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class MetricsLog:
    """Append-only `metrics.jsonl`; on resume, records after the resumed step are dropped so the
    file tells one history."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [
            ln
            for ln in self.path.read_text(encoding="utf-8").splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= step
        ]
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def plot_metrics(run_dir: str | Path, keys: tuple[str, ...] = ("loss", "eval_loss")) -> str | None:
    """loss.png from metrics.jsonl (smoothed training loss, raw points faint, eval loss as dots)."""
    records = MetricsLog(run_dir).read()
    series = {k: [(r["step"], r[k]) for r in records if k in r and r[k] is not None] for k in keys}
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, pts in series.items():
        if not pts:
            continue
        xs, ys = zip(*pts)
        if key.startswith("eval"):
            ax.plot(xs, ys, "o-", label=key)
            continue
        ax.plot(xs, ys, alpha=0.3, linewidth=0.8, color="tab:blue")
        k = max(1, len(ys) // 50)
        smooth = [
            sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))
        ]
        ax.plot(xs, smooth, color="tab:blue", label=f"{key} (moving avg {k})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = _save_figure(fig, Path(run_dir) / "loss.png")
    plot_rewards(run_dir, records)
    return out


REWARD_KEYS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "accuracy",
    "margin",
)


def plot_rewards(run_dir: str | Path, records: list[dict[str, Any]] | None = None) -> str | None:
    """rewards.png for preference and RL stages: implied rewards, margins and pair accuracy per step
    (train as lines, eval as dots), when metrics.jsonl has any of them."""
    records = MetricsLog(run_dir).read() if records is None else records
    series = {
        k: [(r["step"], r[k]) for r in records if r.get(k) is not None]
        for key in REWARD_KEYS
        for k in (key, f"eval_{key}")
    }
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rew, acc) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for key, pts in series.items():
        xs, ys = zip(*pts)
        ax = acc if key.endswith("accuracies") or key.endswith("accuracy") else rew
        ax.plot(xs, ys, "o-" if key.startswith("eval_") else "-", label=key, markersize=3, linewidth=1)
    for ax, label in ((rew, "reward"), (acc, "pair accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(Path(run_dir).name)
    fig.tight_layout()
    return _save_figure(fig, Path(run_dir) / "rewards.png")


def _save_figure(fig, out: Path) -> str:
    import matplotlib.pyplot as plt

    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return str(out)


def write_model_card(
    run_dir: str | Path, stage: str, values: dict[str, Any], summary: dict[str, Any]
) -> None:
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    base = values.get("model_name_or_path") or f"from scratch ({values.get('preset') or 'custom size'})"
    text = f"""---
library_name: transformers
tags: [lmforge, {stage}]
---
# {Path(run_dir).name}

Trained with lmforge, stage `{stage}`, starting from {base}, on `{values.get("dataset")}`.

| figure | value |
|---|---|
{rows}

Load it with plain transformers:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{run_dir}")
tokenizer = AutoTokenizer.from_pretrained("{run_dir}")
```

or chat with it: `lmforge chat --model {run_dir}`. The full config is in `{ARGS_FILE}`.
"""
    atomic_write_text(Path(run_dir) / "README.md", text)
