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
infer, eval, export, merge, import minimind) always run.

Stages run in this process through the Python API (`lmforge.pipeline.run_train`, the commands'
`do_*` functions): a stage's `args` are resolved as a config layer of their own, like a YAML
config file, never turned back into a command line. Only a distributed `train` stage
(NPROC_PER_NODE / NNODES) starts `lmforge train` under torchrun, which needs one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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
    """A stage's args as `lmforge train` flags, for the torchrun relaunch of a distributed stage."""
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
    from lmforge import runtime
    from lmforge.runs import is_finished, latest_checkpoint

    runtime.setup()
    workdir, stages = load_pipeline(path)
    names = {"workdir": workdir, **{st["name"]: str(Path(workdir) / st["name"]) for st in stages}}
    runners = [_runner(st["command"].split(), path, st["name"]) for st in stages]  # all known first
    for st, run in zip(stages, runners):
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
        code = run(args, f"{path}: stage {st['name']}")
        if code:
            raise LmforgeError(f"{path}: stage {st['name']!r} failed with exit status {code}")
        if command[0] == "train" and not is_finished(folder):
            log.warning("stage %s stopped before finishing; run the pipeline again to resume it", st["name"])
            return 0
    return 0


def _has_output(command: list[str]) -> bool:
    return command[0] in ("train", "init") or " ".join(command[:2]) in ("data synth", "tokenizer train")


Runner = Callable[[dict[str, Any], str], int]


def _runner(command: list[str], path: str, name: str) -> Runner:
    """The function that runs a stage's command on its args (`where` names the stage in errors)."""
    if command[0] == "train":
        if len(command) != 2:
            raise LmforgeError(f"{path}: stage {name!r}: `train` needs one stage name, e.g. `train sft`")
        return lambda args, where: _train(command[1], args, where)
    words = tuple(command)
    commands = _commands()
    if words not in commands:
        known = ", ".join(["train STAGE", *(" ".join(w) for w in commands)])
        raise LmforgeError(
            f"{path}: stage {name!r}: `{' '.join(command)}` cannot be a stage (stages run {known})"
        )
    return commands[words]


def _train(stage: str, args: dict[str, Any], where: str) -> int:
    from lmforge.launch import relaunch, wants_launch
    from lmforge.pipeline import resolve_train_config, run_train

    if wants_launch():  # NPROC_PER_NODE / NNODES: `lmforge train` under torchrun (lmforge/launch.py)
        return relaunch(["train", stage, *_argv(args)])
    _, cfg = resolve_train_config(stage, [], values=args, values_from=where)
    print(f"run folder: {run_train(stage, cfg=cfg)}")
    return 0


def _resolved(groups: list[type], args: dict[str, Any], where: str, defaults: dict | None = None):
    from lmforge.config.loader import resolve

    return resolve(groups, [], defaults=defaults, max_positionals=0, values=args, values_from=where)


def _commands() -> dict[tuple[str, ...], Runner]:
    """The non-train commands a stage may run: (flag groups → resolved config → the command's `do_*`)."""
    from lmforge import cli_data, cli_run
    from lmforge.commands import InitArgs, SynthArgs, TokenizerTrainArgs
    from lmforge.config.minimind import chat_defaults_for
    from lmforge.config.schema import ModelArgs
    from lmforge.evaluate.args import EvalArgs
    from lmforge.export.args import ExportArgs
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.batch import InferArgs
    from lmforge.infer.chat import ChatArgs
    from lmforge.models.minimind_import import ImportArgs
    from lmforge.tuners.merge import MergeArgs

    def infer(args: dict[str, Any], where: str) -> int:
        cfg = _resolved([InferArgs, GenerationArgs], args, where)
        return cli_run.do_infer(cfg.group(InferArgs), cfg.group(GenerationArgs))

    return {
        ("data", "synth"): lambda a, w: cli_data.do_data_synth(_resolved([SynthArgs], a, w)),
        ("tokenizer", "train"): lambda a, w: cli_data.do_tokenizer_train(
            _resolved([TokenizerTrainArgs], a, w)
        ),
        ("init",): lambda a, w: cli_data.do_init(_resolved([InitArgs, ModelArgs], a, w)),
        ("chat",): lambda a, w: cli_run.do_chat(
            _resolved([ChatArgs, GenerationArgs], a, w, chat_defaults_for(set(a)))
        ),
        ("infer",): infer,
        ("eval",): lambda a, w: cli_run.do_eval(
            _resolved([EvalArgs, GenerationArgs], a, w, cli_run.EVAL_DEFAULTS)
        ),
        ("export",): lambda a, w: cli_run.do_export(_resolved([ExportArgs], a, w)),
        ("merge",): lambda a, w: cli_run.do_merge(_resolved([MergeArgs], a, w)),
        ("import", "minimind"): lambda a, w: cli_run.do_import_minimind(_resolved([ImportArgs], a, w)),
    }
