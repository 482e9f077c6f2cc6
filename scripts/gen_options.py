"""Write docs/options.md: every lmforge option with its type, default, aliases and help.

The source is the one `--help` prints from: each command is asked for its help through
`lmforge.cli.dispatch([...words, "--help"])` while `lmforge.config.loader.format_help` is replaced by
a recorder, so the page lists exactly the config groups (dataclasses of `arg()` fields), per-command
defaults and aliases that `lmforge COMMAND --help` uses. Hugging Face `TrainingArguments` fields are
left out (their help depends on the installed transformers; `lmforge train STAGE --help` lists them).

    python scripts/gen_options.py           # rewrite docs/options.md
    python scripts/gen_options.py --check   # exit 1 when docs/options.md is out of date

Output is deterministic: commands in `lmforge.cli.COMMANDS` order, groups in first-use order,
fields in declaration order.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "options.md"
REGENERATE = "python scripts/gen_options.py (or make docs)"


@dataclasses.dataclass
class HelpCall:
    """What one `--help` rendered: the command line, its groups and its own defaults."""

    command: str
    groups: list[type]
    include_hf: bool
    defaults: dict[str, Any]


def _record_help(argv: list[str]) -> HelpCall | None:
    """Run `lmforge ARGV --help` with format_help recorded instead of printed; None when the command
    prints its own usage text without option groups."""
    import lmforge.config.loader as loader
    from lmforge import cli

    calls: list[HelpCall] = []

    def record(prog, summary, groups, *, include_hf=False, defaults=None):  # noqa: ARG001
        calls.append(HelpCall(" ".join(argv), list(groups), include_hf, dict(defaults or {})))
        return ""

    with contextlib.ExitStack() as stack:
        for module in (loader, cli):  # wherever the CLI finds format_help
            if hasattr(module, "format_help"):
                stack.enter_context(mock.patch.object(module, "format_help", record))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        cli.dispatch([*argv, "--help"])
    return calls[0] if calls else None


def _help_calls() -> tuple[list[tuple[str, HelpCall | None]], list[HelpCall]]:
    """(every non-train command with its help, every `train STAGE` help incl. MiniMind's names)."""
    from lmforge import cli
    from lmforge.config.minimind import STAGE_ALIASES
    from lmforge.stages import STAGES

    commands = [(" ".join(w), _record_help(list(w))) for w in cli.COMMANDS if w != ("train",)]
    stages = [c for c in (_record_help(["train", s]) for s in [*STAGES, *STAGE_ALIASES]) if c is not None]
    if not stages:
        raise SystemExit("gen_options: `lmforge train STAGE --help` no longer goes through format_help")
    return commands, stages


def _title(cls: type) -> str:
    """A group's heading: its class name, or `train STAGE` for a stage's own `Args`."""
    if cls.__name__ == "Args" and cls.__module__.startswith("lmforge.stages."):
        from lmforge.stages import STAGES

        stem = cls.__module__.rsplit(".", 1)[1]
        return "train " + next((s for s in STAGES if s.replace("-", "_") == stem), stem)
    return cls.__name__


def _anchor(title: str) -> str:
    """GitHub's heading anchor for a plain heading text."""
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _cell(text: str) -> str:
    """Table-cell text that renders as typed: pipes, angle brackets (`<think>`) and stars escaped."""
    for raw, safe in (("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*"), ("\n", " ")):
        text = text.replace(raw, safe)
    return text


def _value(value: Any) -> str:
    """A default as it is typed on the command line."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, (list, tuple)) and not value:
        return "—"
    return f"`{value!r}`"


def _aliases_by_key() -> dict[str, list[str]]:
    from lmforge.config.aliases import ALIASES

    by_key: dict[str, list[str]] = {}
    for alias, (targets, _) in ALIASES.items():
        for key in (targets,) if isinstance(targets, str) else targets:
            by_key.setdefault(key, []).append(alias)
    return by_key


def _group_table(cls: type, by_key: dict[str, list[str]]) -> list[str]:
    from lmforge.config.loader import specs_of

    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for key, spec in specs_of(cls, cls.__name__).items():
        names = f"`--{key}`"
        if by_key.get(key):
            names += " (" + ", ".join(f"`--{a}`" for a in by_key[key]) + ")"
        type_text = spec.type_text + (", a list" if spec.multi and not spec.is_list else "")
        meaning = spec.help
        if spec.choices:
            meaning += " (one of: " + ", ".join(map(str, spec.choices)) + ")"
        rows.append(f"| {names} | {_cell(type_text)} | {_cell(_value(spec.default))} | {_cell(meaning)} |")
    return rows


def _links(groups: list[type]) -> str:
    return ", ".join(f"[{_title(g)}](#{_anchor(_title(g))})" for g in groups)


def _command_rows(commands: list[tuple[str, HelpCall | None]], stage: HelpCall) -> list[str]:
    rows = ["| command | option groups |", "|---|---|"]
    for words, call in commands:
        if call is None:
            rows.append(f"| `lmforge {words}` | its own usage text: `lmforge {words} --help` |")
            continue
        own = f"; own defaults: {_defaults_text(call.defaults)}" if call.defaults else ""
        rows.append(f"| `lmforge {words}` | {_links(call.groups)}{_cell(own)} |")
    shared = [g for g in stage.groups if not _title(g).startswith("train ")]
    rows.append(
        f"| `lmforge train STAGE` | {_links(shared)}, the stage's own group below, and every Hugging Face "
        "`TrainingArguments` field (`lmforge train STAGE --help` lists them) |"
    )
    return rows


def _defaults_text(defaults: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v!r}`" for k, v in sorted(defaults.items()))


def _stage_rows(stages: list[HelpCall]) -> list[str]:
    """One row per stage: its own group and the defaults it sets beyond those every stage shares."""
    common = {k: v for k, v in stages[0].defaults.items() if all(c.defaults.get(k, ...) == v for c in stages)}
    rows = [
        f"Every stage sets {_defaults_text(common)}; beyond those:",
        "",
        "| command | stage group | defaults of this stage |",
        "|---|---|---|",
    ]
    for call in stages:
        own = [g for g in call.groups if _title(g).startswith("train ")]
        rest = {k: v for k, v in call.defaults.items() if k not in common}
        rows.append(f"| `lmforge {call.command}` | {_links(own)} | {_defaults_text(rest)} |")
    return rows


def _ordered_groups(commands: list[tuple[str, HelpCall | None]], stages: list[HelpCall]) -> list[type]:
    seen: dict[str, type] = {}
    for call in [c for _, c in commands if c is not None] + stages:
        for g in call.groups:
            seen.setdefault(f"{g.__module__}.{g.__qualname__}", g)
    return list(seen.values())


def render() -> str:
    """The whole of docs/options.md."""
    commands, stages = _help_calls()
    by_key = _aliases_by_key()
    lines = [
        "# Options",
        "",
        "<!-- Generated by scripts/gen_options.py from the config fields' help; do not edit. -->",
        "",
        "Every option of every command, generated from the same fields `lmforge COMMAND --help` prints "
        f"(regenerate: `{REGENERATE}`). Flags and config-file keys are the same names; aliases "
        "(MiniMind, mdl-toolkit, LLaMA-Factory, ms-swift spellings) are listed in brackets. "
        "A command's own defaults replace a field's default where the tables below say so.",
        "",
        "## Commands",
        "",
        *_command_rows(commands, stages[0]),
        "",
        "## Training stages",
        "",
        "`lmforge train STAGE` takes the shared groups above plus the stage's own group; each stage "
        "sets its own defaults (MiniMind's, unless noted in [train.md](train.md)).",
        "",
        *_stage_rows(stages),
        "",
        "## Option groups",
    ]
    for cls in _ordered_groups(commands, stages):
        doc = (cls.__doc__ or "").strip().splitlines()
        intro = doc[0] if doc and not doc[0].startswith(cls.__name__ + "(") else ""
        lines += [
            "",
            f"### {_title(cls)}",
            "",
            f"`{cls.__module__}.{cls.__qualname__}`. {intro}".rstrip(),
            "",
        ]
        lines += _group_table(cls, by_key)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/options.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.is_file() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date; run: {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
