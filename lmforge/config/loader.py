"""Flags + YAML → one flat, typed, validated config.

Precedence: field defaults < the command's defaults < YAML file < command-line flags. Keys are
the dataclass field names of the command's groups plus (for training) every Hugging Face
`TrainingArguments` field; aliases (aliases/) are rewritten first. Unknown keys stop with a
did-you-mean suggestion. Written by hand because argparse cannot merge a YAML layer, aliases
and ~150 TrainingArguments fields with per-stage defaults in one key space.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import re
from pathlib import Path
from typing import Any

from lmforge.config.aliases import ALIASES, UNAVAILABLE, VALUE_TRANSFORMS
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

_TRUE = ("1", "true", "yes", "y", "on")
_FALSE = ("0", "false", "no", "n", "off")


@dataclasses.dataclass
class Spec:
    """One accepted key: where it comes from, its type text, default and help."""

    name: str
    type_text: str
    default: Any
    help: str
    group: str
    choices: tuple | None = None
    multi: bool = False  # a list: several values after one flag, repeated flags accumulate

    @property
    def is_list(self) -> bool:
        """A real list type (`report_to: str | list[str]`), not a comma-joined string."""
        return "list[" in self.type_text.lower() and "dict" not in self.type_text.lower()


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def specs_of(cls: type, group: str) -> dict[str, Spec]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name.startswith("_") or not f.init:
            continue
        type_text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", repr(f.type))
        help_text = " ".join(str(f.metadata.get("help", "")).split())
        spec = Spec(f.name, str(type_text), _field_default(f), help_text, group, f.metadata.get("choices"))
        spec.multi = bool(f.metadata.get("multi")) or spec.is_list
        out[f.name] = spec
    return out


_HF_SPECS: dict[str, Spec] | None = None
# TrainingArguments fields that lmforge sets itself or that make no sense from a flag.
_HF_HIDDEN = {"output_dir", "_n_gpu", "__cached__setup_devices", "deepspeed_plugin"}


def hf_training_specs() -> dict[str, Spec]:
    global _HF_SPECS
    if _HF_SPECS is None:
        from transformers import TrainingArguments

        specs = specs_of(TrainingArguments, "Hugging Face TrainingArguments")
        for spec in specs.values():
            spec.help = spec.help.split(". ")[0][:160]
        # a value lmforge adds to transformers' list (lmforge/tuners/muon.py)
        specs["optim"].help += (
            "; or muon: Muon for the decoder blocks' matrices, AdamW for the rest (from-scratch "
            "pretraining's default, at lr 8e-3, when neither --optim nor --learning_rate is given)"
        )
        specs["learning_rate"].help = (
            specs["learning_rate"].help.rstrip(".")
            + "; from-scratch pretraining without it: Muon at 8e-3 (--optim)"
        )
        _HF_SPECS = {k: v for k, v in specs.items() if k not in _HF_HIDDEN}
    return _HF_SPECS


def _coerce_one(alt: str, value: Any) -> Any:
    """Convert to one alternative of a field's type, or raise ValueError."""
    if alt in ("none", "nonetype"):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        raise ValueError
    if alt == "bool":
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise ValueError
    if alt == "int":
        if isinstance(value, bool):
            raise ValueError
        f = float(value)
        if f != int(f):
            raise ValueError
        return int(f)
    if alt == "float":
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if alt.startswith(("list", "tuple")):
        if isinstance(value, str):
            return [x.strip() for x in value.split(",") if x.strip()]
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ValueError
    if alt.startswith("dict"):
        if isinstance(value, dict):
            return value
        if isinstance(value, str) and value.strip().startswith("{"):
            return json.loads(value)
        raise ValueError
    if alt == "str":
        if isinstance(value, (dict, list)):
            raise ValueError
        return value if isinstance(value, str) else str(value)
    return value  # an enum or class the target library validates itself


def coerce(spec: Spec, value: Any, where: str) -> Any:
    """Turn a flag string (or loosely typed YAML value) into the field's type."""
    text = spec.type_text.replace("typing.", "").replace("Optional[", "").rstrip("]").lower()
    alts = [a.strip() for a in text.split("|") if a.strip()] or ["str"]
    if value is None:
        return None
    # Most specific first, so "5" becomes 5 for `int | str` but stays "5" for a plain str field.
    order = ["none", "bool", "int", "float", "dict", "list", "str"]
    alts.sort(key=lambda a: next((i for i, o in enumerate(order) if a.startswith(o)), len(order)))
    if "str" in alts and isinstance(value, str) and not any(a in ("bool", "int", "float") for a in alts):
        # "none" is a real value of some string fields (report_to none); only "null" means unset.
        if "none" in alts and value.strip().lower() == "null":
            return None
        alts = [a for a in alts if a.startswith("dict")] + ["str"]
    for alt in alts:
        try:
            out = _coerce_one(alt, value)
            break
        except (ValueError, TypeError, json.JSONDecodeError):
            continue
    else:
        raise LmforgeError(f"{where}: --{spec.name} expects {spec.type_text}; got {value!r}")
    if spec.choices and out not in spec.choices:
        raise LmforgeError(
            f"{where}: --{spec.name} must be one of {', '.join(map(str, spec.choices))}; got {out!r}"
        )
    return out


def _is_flag(tok: str) -> bool:
    return tok.startswith("--") and len(tok) > 2


_OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$", re.S)


def override_key(word: str, specs: dict[str, Spec]) -> str | None:
    """The option a LLaMA-Factory style `key=value` word sets, when `key` is one of the command's."""
    m = _OVERRIDE.match(word)
    if not m:
        return None
    key, _ = canonical_key(m.group(1).replace("-", "_"), specs)
    return key if key in specs else None


def split_argv(
    argv: list[str], specs: dict[str, Spec] | None = None
) -> tuple[list[str], list[tuple[str, Any]]]:
    """Positionals and (key, raw value) pairs in command-line order.

    `--flag` alone means True; `--key=value` and `key=value` (a key of the command) set one value;
    a list option (`Spec.multi`) takes every word up to the next flag (`--dataset a.jsonl b.jsonl`,
    as ms-swift), any other option one word, the rest are positionals."""
    specs = specs or {}
    positionals: list[str] = []
    pairs: list[tuple[str, Any]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not _is_flag(tok):
            if override_key(tok, specs):
                key, value = tok.split("=", 1)
                pairs.append((key.replace("-", "_"), value))
            else:
                positionals.append(tok)
            i += 1
            continue
        key = tok[2:].split("=", 1)[0].replace("-", "_")
        i += 1
        if "=" in tok:  # `--key=value`: only the key's dashes are spelling (`--max-length`)
            pairs.append((key, tok.split("=", 1)[1]))
            continue
        values: list[str] = []
        while i < len(argv) and not _is_flag(argv[i]) and not override_key(argv[i], specs):
            values.append(argv[i])
            i += 1
        native = canonical_key(key, specs)[0]
        spec = specs.get(native)
        if not values:
            pairs.append((key, True))
        elif (spec is not None and spec.multi) or (spec is None and native in UNAVAILABLE):
            pairs.append((key, values if len(values) > 1 else values[0]))
        else:
            pairs.append((key, values[0]))
            positionals += values[1:]
    return positionals, pairs


def _as_multi(spec: Spec, value: Any) -> Any:
    """A list option's value: several words → one comma list (a real list for list-typed fields)."""
    if value is None or isinstance(value, bool):
        return value
    items = value if isinstance(value, (list, tuple)) else [value]
    if not spec.is_list:
        return ",".join(str(v) for v in items) if isinstance(value, (list, tuple)) else value
    flat = [p.strip() for v in items for p in str(v).split(",") if p.strip()]
    return flat[0] if len(flat) == 1 and not isinstance(value, (list, tuple)) else flat


def _accumulate(spec: Spec, old: Any, new: Any) -> Any:
    if old is None or old is True:
        return new
    if spec.is_list:
        as_list = [old] if isinstance(old, str) else list(old)
        return as_list + ([new] if isinstance(new, str) else list(new))
    return f"{old},{new}"


def load_yaml(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise LmforgeError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise LmforgeError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise LmforgeError(f"{path}: a config file must be a mapping of flat keys; got {type(data).__name__}")
    return data


@dataclasses.dataclass
class Config:
    """The resolved flat config of one command."""

    values: dict[str, Any]
    specs: dict[str, Spec]
    explicit: set[str]
    positionals: list[str]
    layered: set[str] = dataclasses.field(default_factory=set)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def group(self, cls: type):
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: v for k, v in self.values.items() if k in names})

    def hf_values(self) -> dict[str, Any]:
        hf = hf_training_specs()
        return {k: v for k, v in self.values.items() if k in hf and (k in self.explicit or k in self.layered)}

    def to_yaml_dict(self) -> dict[str, Any]:
        """lmforge keys in full, TrainingArguments keys only where set: enough to re-run."""
        hf = hf_training_specs()
        return {
            k: v for k, v in self.values.items() if k not in hf or k in self.explicit or k in self.layered
        }


def canonical_key(key: str, specs: dict[str, Spec] | None = None) -> tuple[str, Any]:
    """The native key for what the user typed: the key itself when the command has it, else the
    first alias target the command has."""
    if specs is not None and key in specs:
        return key, VALUE_TRANSFORMS.get(key)
    if key in ALIASES:
        targets, transform = ALIASES[key]
        targets = (targets,) if isinstance(targets, str) else targets
        chosen = next((t for t in targets if specs is None or t in specs), targets[0])
        return chosen, transform
    return key, VALUE_TRANSFORMS.get(key)


def is_config_file(word: str, specs: dict[str, Spec], *, inputs: bool) -> bool:
    """A positional that is a config file: any .yaml/.yml; a .json one when the command takes no
    positional inputs, else only a JSON object whose keys are all the command's options."""
    if word.endswith((".yaml", ".yml")):
        return True
    if not word.endswith(".json"):
        return False
    if not inputs:
        return True
    try:
        data = json.loads(Path(word).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(canonical_key(str(k), specs)[0] in specs for k in data)


def load_config_file(path: str) -> dict[str, Any]:
    """A flat mapping from a YAML or JSON config file."""
    if not path.endswith(".json"):
        return load_yaml(path)
    p = Path(path)
    if not p.is_file():
        raise LmforgeError(f"{path}: config file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LmforgeError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise LmforgeError(
            f"{path}: a config file must be a JSON object of flat keys; got {type(data).__name__}"
        )
    return data


def unknown_option(where: str, raw_key: str, specs: dict[str, Spec]) -> LmforgeError:
    """`unknown option --x`, with a did-you-mean drawn only from this command's options and the
    aliases that lead to one of them (never the word just typed)."""
    known = set(specs)
    for alias, (targets, _) in ALIASES.items():
        if any(t in specs for t in ((targets,) if isinstance(targets, str) else targets)):
            known.add(alias)
    known.discard(raw_key)
    near = difflib.get_close_matches(raw_key, sorted(known), n=1)
    hint = f"; did you mean --{near[0]}?" if near else ""
    return LmforgeError(f"{where}: unknown option --{raw_key}{hint}")


def check_unavailable(where: str, key: str, value: Any) -> None:
    """A reference flag with no effect here: fine when its value asks for what lmforge does anyway,
    else one line saying why and what to do instead."""
    accepted, reason = UNAVAILABLE[key]
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    if "*" in accepted or text.strip().lower() in accepted:  # "*": no value changes what lmforge does
        return
    raise LmforgeError(f"{where}: --{key} {text}: " + reason.format(value=text))


def collect_specs(groups: list[type], include_hf: bool = False) -> dict[str, Spec]:
    specs: dict[str, Spec] = {}
    for cls in groups:
        specs.update(specs_of(cls, cls.__name__))
    if include_hf:
        for k, v in hf_training_specs().items():
            specs.setdefault(k, v)
    return specs


def _check_positionals(rest: list[str], max_positionals: int | None, specs: dict[str, Spec]) -> None:
    if max_positionals is None or len(rest) <= max_positionals:
        return
    word = rest[max_positionals]
    m = _OVERRIDE.match(word)
    if m:  # `lerning_rate=1e-5`: a key=value override whose key the command does not have
        raise unknown_option("command line", m.group(1).replace("-", "_"), specs)
    raise LmforgeError(f"unexpected argument {word!r} (options are --key value or key=value)")


def resolve(
    groups: list[type],
    argv: list[str],
    *,
    include_hf: bool = False,
    defaults: dict[str, Any] | None = None,
    yaml_positional: bool = True,
    max_positionals: int | None = None,
    values: dict[str, Any] | None = None,
    values_from: str = "arguments",
) -> Config:
    """Parse `argv` against `groups` (+ TrainingArguments when include_hf).

    Config files (YAML/JSON positionals) apply in order over `defaults`, then `values` (flat keys
    given from Python, e.g. a pipeline stage's `args`; errors name them `values_from`), then the
    command line (`--key value`, `--key=value`, `key=value`). Within one layer a list option accumulates and any
    other option given twice keeps the last value, with a warning. More than `max_positionals` leftover
    words (None: no limit, the command checks) is an error naming the first extra one."""
    specs = collect_specs(groups, include_hf)
    resolved = {k: s.default for k, s in specs.items()}
    positionals, pairs = split_argv(argv, specs)
    layers: list[tuple[str, list[tuple[str, Any]]]] = []
    if defaults:
        layers.append(("defaults", list(defaults.items())))
    rest = []
    for pos in positionals:
        if yaml_positional and is_config_file(pos, specs, inputs=max_positionals != 0):
            layers.append((pos, list(load_config_file(pos).items())))
        else:
            rest.append(pos)
    _check_positionals(rest, max_positionals, specs)
    if values:
        layers.append((values_from, list(values.items())))
    layers.append(("command line", pairs))
    explicit: set[str] = set()
    layered: set[str] = set()
    for where, items in layers:
        seen: dict[str, Any] = {}
        for raw_key, raw_val in items:
            key, transform = canonical_key(str(raw_key), specs)
            if key not in specs and key in UNAVAILABLE:
                check_unavailable(where, key, raw_val)
                continue
            if key not in specs:
                raise unknown_option(where, str(raw_key), specs)
            spec = specs[key]
            val = _as_multi(spec, raw_val) if spec.multi else raw_val
            val = coerce(spec, transform(val) if transform else val, where)
            if key in seen:
                if spec.multi:
                    val = _accumulate(spec, seen[key], val)
                elif seen[key] != val:  # a later flag overrides an earlier one (as argparse), said aloud
                    log.warning(
                        "%s: --%s given twice (%r, then %r): using %r", where, key, seen[key], val, val
                    )
            seen[key] = resolved[key] = val
            layered.add(key)
            if where != "defaults":
                explicit.add(key)
    return Config(resolved, specs, explicit, rest, layered)


def format_help(
    prog: str,
    summary: str,
    groups: list[type],
    *,
    include_hf: bool = False,
    defaults: dict[str, Any] | None = None,
) -> str:
    """Every flag with its default and one line of meaning; aliases listed under their key."""
    by_key: dict[str, list[str]] = {}
    for alias, (targets, _) in ALIASES.items():
        for key in (targets,) if isinstance(targets, str) else targets:
            by_key.setdefault(key, []).append(alias)
    lines = [f"usage: {prog} [CONFIG.yaml] [--key value ...]", "", summary, ""]
    sections = [(cls.__name__, specs_of(cls, cls.__name__)) for cls in groups]
    if include_hf:
        seen = {k for _, s in sections for k in s}
        sections.append(
            (
                "Hugging Face TrainingArguments",
                {k: v for k, v in hf_training_specs().items() if k not in seen},
            )
        )
    for title, specs in sections:
        lines.append(f"{title}:")
        for key, spec in specs.items():
            default = (defaults or {}).get(key, spec.default)
            aliases = by_key.get(key)
            alias_text = f" (alias: {', '.join('--' + a for a in aliases)})" if aliases else ""
            lines.append(f"  --{key}{alias_text}  [default: {default!r}]")
            if spec.help:
                lines.append(f"      {spec.help}")
        lines.append("")
    return "\n".join(lines)
