"""`lmforge pipeline FILE.yaml`: several commands in order, each skipped when finished and
resumed when interrupted.

File shape::

    workdir: out/demo            # stage folders default to workdir/<stage name>
    stages:
      - name: data
        command: data synth      # any lmforge command
        args: {scale: 0.5}       # the command's flat keys; output_dir defaults to workdir/name
      - name: pretrain
        command: train pretrain
        args: {dataset: "{workdir}/data/pretrain.jsonl", preset: tiny}

`{workdir}` and `{<stage name>}` in string values expand to those folders. A `train` stage whose
folder holds `lmforge_finished.json` is skipped; one with checkpoints resumes from the newest;
`data synth` / `tokenizer train` / `init` stages are skipped when finished. Other commands (chat,
infer) always run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")
_RESUMABLE = {"data synth", "tokenizer train", "init"}


def _expand(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, path in names.items():
            value = value.replace("{" + key + "}", path)
        return value
    if isinstance(value, list):
        return [_expand(v, names) for v in value]
    return value


def _argv(args: dict[str, Any]) -> list[str]:
    out = []
    for k, v in args.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = ",".join(map(str, v))
        elif isinstance(v, dict):
            import json

            v = json.dumps(v)
        out += [f"--{k}", str(v)]
    return out


def load_pipeline(path: str) -> tuple[str, list[dict[str, Any]]]:
    from lmforge.config.loader import load_yaml

    data = load_yaml(path)
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise LmforgeError(f'{path}: "stages" must be a non-empty list of {{name, command, args}}')
    unknown = set(data) - {"workdir", "stages", "name", "description"}
    if unknown:
        raise LmforgeError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected workdir, stages")
    workdir = str(data.get("workdir") or Path("out") / Path(path).stem)
    seen = set()
    for i, st in enumerate(stages):
        if not isinstance(st, dict) or "command" not in st or "name" not in st:
            raise LmforgeError(f'{path}: stages[{i}] must have "name" and "command"')
        if st["name"] in seen:
            raise LmforgeError(f"{path}: stages[{i}] repeats the name {st['name']!r}")
        seen.add(st["name"])
        if not isinstance(st.get("args", {}), dict):
            raise LmforgeError(f"{path}: stages[{i}].args must be a mapping of flat keys")
    return workdir, stages


def run_pipeline_file(path: str, *, dry_run: bool = False) -> int:
    from lmforge.cli import dispatch
    from lmforge.runs import is_finished, latest_checkpoint

    workdir, stages = load_pipeline(path)
    names = {"workdir": workdir, **{st["name"]: str(Path(workdir) / st["name"]) for st in stages}}
    for st in stages:
        command = st["command"].split()
        args = {k: _expand(v, names) for k, v in (st.get("args") or {}).items()}
        folder = args.setdefault("output_dir", names[st["name"]]) if _has_output(command) else None
        key = " ".join(command[:2])
        finished = folder is not None and is_finished(folder)
        resumable = command[0] == "train" and folder and latest_checkpoint(folder)
        state = "done" if finished else ("resume" if resumable else "run")
        log.info("pipeline %s: stage %s (%s) → %s", Path(path).name, st["name"], " ".join(command), state)
        if dry_run:
            print(f"{st['name']:<14} {' '.join(command):<20} {state:<7} {folder or ''}")
            continue
        if finished and (command[0] == "train" or key in _RESUMABLE):
            continue
        if resumable:
            args["resume_from_checkpoint"] = "latest"
        code = dispatch(command + _argv(args))
        if code:
            raise LmforgeError(f"{path}: stage {st['name']!r} failed with exit status {code}")
        if command[0] == "train" and not is_finished(folder):
            log.warning("stage %s stopped before finishing; run the pipeline again to resume it", st["name"])
            return 0
    return 0


def _has_output(command: list[str]) -> bool:
    return command[0] in ("train", "init") or " ".join(command[:2]) in ("data synth", "tokenizer train")
