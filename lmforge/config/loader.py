"""Flags + YAML → one flat, typed, validated config.

Precedence: field defaults < the command's defaults < YAML file < command-line flags. Keys are
the dataclass field names of the command's groups plus (for training) every Hugging Face
`TrainingArguments` field; aliases (aliases.py) are rewritten first. Unknown keys stop with a
did-you-mean suggestion. Written by hand because argparse cannot merge a YAML layer, aliases
and ~150 TrainingArguments fields with per-stage defaults in one key space.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

from lmforge.config.aliases import ALIASES, VALUE_TRANSFORMS
from lmforge.errors import LmforgeError

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
        out[f.name] = Spec(
            f.name, str(type_text), _field_default(f), help_text, group, f.metadata.get("choices")
        )
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


def split_argv(argv: list[str]) -> tuple[list[str], list[tuple[str, Any]]]:
    """Positionals and (key, raw value) pairs; `--flag` alone means True."""
    positionals: list[str] = []
    pairs: list[tuple[str, Any]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--") and len(tok) > 2:
            key = tok[2:].split("=", 1)[0].replace("-", "_")
            if "=" in tok:  # `--key=value`: only the key's dashes are spelling (`--max-length`)
                pairs.append((key, tok.split("=", 1)[1]))
            elif i + 1 < len(argv) and not (argv[i + 1].startswith("--") and len(argv[i + 1]) > 2):
                pairs.append((key, argv[i + 1]))
                i += 1
            else:
                pairs.append((key, True))
        else:
            positionals.append(tok)
        i += 1
    return positionals, pairs


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


def resolve(
    groups: list[type],
    argv: list[str],
    *,
    include_hf: bool = False,
    defaults: dict[str, Any] | None = None,
    yaml_positional: bool = True,
) -> Config:
    """Parse `argv` against `groups` (+ TrainingArguments when include_hf)."""
    specs: dict[str, Spec] = {}
    for cls in groups:
        specs.update(specs_of(cls, cls.__name__))
    if include_hf:
        for k, v in hf_training_specs().items():
            specs.setdefault(k, v)
    values = {k: s.default for k, s in specs.items()}
    positionals, pairs = split_argv(argv)
    layers: list[tuple[str, list[tuple[str, Any]]]] = []
    if defaults:
        layers.append(("defaults", list(defaults.items())))
    rest = []
    for pos in positionals:
        if yaml_positional and pos.endswith((".yaml", ".yml")):
            layers.append((pos, list(load_yaml(pos).items())))
        else:
            rest.append(pos)
    layers.append(("command line", pairs))
    explicit: set[str] = set()
    layered: set[str] = set()
    for where, items in layers:
        for raw_key, raw_val in items:
            key, transform = canonical_key(raw_key, specs)
            if key not in specs:
                known = sorted(set(specs) | set(ALIASES))
                near = difflib.get_close_matches(raw_key, known, n=1)
                hint = f"; did you mean --{near[0]}?" if near else ""
                raise LmforgeError(f"{where}: unknown option --{raw_key}{hint}")
            val = transform(raw_val) if transform else raw_val
            values[key] = coerce(specs[key], val, where)
            layered.add(key)
            if where != "defaults":
                explicit.add(key)
    return Config(values, specs, explicit, rest, layered)


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
