"""What a browser may make the web UI do: which folders it reads and writes, what code it runs,
who may use it. No Gradio in here.

- Runs are written only inside `--runs_dir` (the resolved run folder must lie below it).
- Models, tokenizers, adapters, checkpoints, datasets and caches named in a form are read only
  from inside the allowed roots: `--runs_dir` plus `--data_roots` (default: the working folder).
  Paths are compared after resolving `..` and symbolic links, so neither leads outside.
- `trust_remote_code` (model code from a model folder) is refused unless the UI was started with
  `--allow_remote_code`.
- Nothing the form sets may send data off the machine: `push_to_hub`, trackers other than
  TensorBoard, and a distill-api `base_url` that would receive the server's own API key.
- A config file (a positional argument) is refused: it could set any of the above unseen.
- Binding beyond loopback or opening a share link needs `--auth` or `--api_key`, and warns.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

# Fields naming a model folder (or a MiniMind name inside --save_dir / a cached hub name).
MODEL_FIELDS = ("model_name_or_path", "teacher_model_name_or_path", "ref_model", "reward_model_path")
# Fields naming one folder or file each, read or written; comma lists are split.
PATH_FIELDS = (
    "tokenizer_path",
    "adapter_name_or_path",
    "dataset_dir",
    "tokenized_path",
    "base_dir",
    "image_dir",
    "teacher_cache_dir",
    "resume_from_checkpoint",
)
DATA_FIELDS = ("dataset", "val_dataset")
JSON_OR_PATH_FIELDS = ("deepspeed", "fsdp_config", "accelerator_config")  # a JSON text or a file
LOCAL_TRACKERS = {"none", "tensorboard"}
REGISTRY_NAMES = ("dataset_info.yaml", "dataset_info.yml", "dataset_info.json")  # as data/load.py


def _real(path: str | Path) -> Path:
    """Absolute, `..` and symbolic links resolved (a missing tail is kept as written)."""
    return Path(os.path.abspath(os.fspath(path))).resolve()


@dataclass(frozen=True)
class Access:
    """The folders the web UI may use and whether it may run a model folder's code."""

    runs_dir: Path
    data_roots: tuple[Path, ...]
    allow_remote_code: bool = False

    @classmethod
    def create(cls, runs_dir: str, data_roots: str | None = None, allow_remote_code: bool = False):
        """`data_roots`: comma-separated folders (None or empty: the working folder)."""
        names = [r.strip() for r in (data_roots or "").split(",") if r.strip()] or [os.getcwd()]
        for name in names:
            if not Path(name).is_dir():
                raise LmforgeError(f"--data_roots {name}: not a folder")
        return cls(_real(runs_dir), tuple(_real(n) for n in names), allow_remote_code)

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.runs_dir, *self.data_roots)

    def describe(self) -> str:
        return ", ".join(dict.fromkeys(str(r) for r in self.roots))

    def readable(self, path: str | Path) -> bool:
        real = _real(path)
        return any(real.is_relative_to(root) for root in self.roots)

    def check_readable(self, path: str | Path, what: str) -> None:
        if not self.readable(path):
            raise LmforgeError(
                f"{what} {path}: outside the folders this web UI may use ({self.describe()}); "
                "start it with --data_roots to add a folder"
            )

    def check_run_dir(
        self, path: str | Path, what: str = "--output_dir", *, folder_itself: bool = False
    ) -> None:
        """A run folder must lie inside --runs_dir (`folder_itself`: or be it, for --save_dir)."""
        real = _real(path)
        if (real == self.runs_dir and not folder_itself) or not real.is_relative_to(self.runs_dir):
            raise LmforgeError(
                f"{what} {path}: outside the runs folder {self.runs_dir} "
                "(the web UI writes runs only inside --runs_dir)"
            )


# --- a training form ----------------------------------------------------------------------------
def check_flags(flags: list[str]) -> None:
    """Before the flags are parsed: no config file or other positional argument."""
    from lmforge.config.loader import split_argv

    positionals, _ = split_argv(flags)
    if positionals:
        raise LmforgeError(
            f"extra flags: {positionals[0]!r} is not a --flag; the web UI takes no config file "
            "or other positional argument"
        )


def check_train(stage: str, cfg: Any, access: Access) -> None:
    """Refuse a resolved `lmforge train` config that reaches outside what `access` allows (its
    run folder is checked apart, with `Access.check_run_dir`, once it is known)."""
    if cfg.get("trust_remote_code") and not access.allow_remote_code:
        raise LmforgeError(
            "trust_remote_code: refused; the web UI does not run code from model folders "
            "(start it with --allow_remote_code to permit it)"
        )
    if "save_dir" in cfg.explicit:
        access.check_run_dir(cfg["save_dir"], "--save_dir", folder_itself=True)
    for name in MODEL_FIELDS:
        if cfg.get(name):
            for location in _model_locations(cfg[name], cfg, name in cfg.explicit):
                access.check_readable(location, f"--{name}")
    for name in PATH_FIELDS:
        value = cfg.get(name)
        if value and not (name == "resume_from_checkpoint" and value == "latest"):
            for part in _comma_list(value):
                access.check_readable(part, f"--{name}")
    for name in DATA_FIELDS:
        if cfg.get(name):
            for location in _data_locations(cfg[name], cfg.get("dataset_dir")):
                access.check_readable(location, f"--{name}")
    for name in JSON_OR_PATH_FIELDS:
        value = cfg.get(name)
        if isinstance(value, str) and value.strip() and not value.lstrip().startswith("{"):
            access.check_readable(value, f"--{name}")
    _check_network(stage, cfg)


def check_model(path: str, access: Access) -> None:
    """The Chat tab's Load: the folder typed, and what it resolves to, must be inside the roots."""
    for location in _model_locations(path, {"save_dir": "out"}):  # as Engine.from_path resolves
        access.check_readable(location, "model")


def _comma_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [p.strip() for p in str(value).split(",") if p.strip()]


def _model_locations(name: str, cfg: Any, typed: bool = True) -> list[str]:
    """Where the run would read `name` from: the folder it resolves to (a MiniMind name inside
    --save_dir, a cached hub name; an adapter folder's base model) and, when typed in the form
    or present on disk, the path as written."""
    from lmforge.models.locate import adapter_base, is_adapter_dir, resolve_model_path

    found = [name] if typed or os.path.exists(name) else []
    if is_adapter_dir(name):  # its base model is read too
        try:
            base = adapter_base(name)
        except LmforgeError:
            base = None
        return found + (_model_locations(str(base), cfg) if base and base != name else [])
    try:
        path = resolve_model_path(
            name,
            save_dir=cfg.get("save_dir") or "",
            hidden_size=cfg.get("hidden_size"),
            use_moe=bool(cfg.get("use_moe")),
        )
    except LmforgeError:  # found nowhere: nothing is read, and the run says so itself
        return found
    if path != name and Path(path, "adapter_config.json").is_file():  # e.g. a LoRA run's checkpoint
        return found + _model_locations(path, cfg)
    return found + [path]


def _registry(dataset_dir: str | None) -> str | None:
    for folder in (dataset_dir, os.getcwd()):
        for name in REGISTRY_NAMES:
            if folder and os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
    return None


def _registry_file(registry: str, name: str) -> str | None:
    try:
        with open(registry, encoding="utf-8") as f:
            if registry.endswith(".json"):
                entries = json.load(f)
            else:
                import yaml

                entries = yaml.safe_load(f) or {}
    except (OSError, ValueError, ImportError):
        return None
    entry = entries.get(name) if isinstance(entries, dict) else None
    file_name = entry.get("file_name") if isinstance(entry, dict) else None
    return os.path.join(os.path.dirname(registry), str(file_name)) if file_name else None


def _data_locations(spec: str, dataset_dir: str | None) -> list[str]:
    """Files and folders a dataset specifier reads (the forms data/load.py accepts: paths,
    folders, `path#N`, registry names); an unknown name is checked as the path it would be."""
    found = []
    for piece in _comma_list(spec):
        name = piece
        head, sep, tail = piece.rpartition("#")
        if sep and tail.isdigit() and not os.path.exists(piece):
            name = head
        registry = None if os.path.exists(name) else _registry(dataset_dir)
        target = _registry_file(registry, name) if registry else None
        found += [registry, target] if target else [name]
    return found


def _check_network(stage: str, cfg: Any) -> None:
    if cfg.get("push_to_hub"):
        raise LmforgeError(
            "push_to_hub: refused; the web UI does not upload models (run `lmforge train` yourself)"
        )
    if "report_to" in cfg.explicit:
        trackers = set(_comma_list(cfg.get("report_to") or "none")) - LOCAL_TRACKERS
        if trackers:
            raise LmforgeError(
                f"report_to {','.join(sorted(trackers))}: refused; the web UI only logs locally "
                "(none, tensorboard)"
            )
    if (
        stage.replace("_", "-") == "distill-api"
        and "base_url" in cfg.explicit
        and "api_key" not in cfg.explicit
    ):
        raise LmforgeError(
            "base_url: type the teacher's api_key in the form too; the web UI does not send its "
            "own $OPENAI_API_KEY to an address a form names"
        )


# --- who may use it -----------------------------------------------------------------------------
def parse_auth(text: str | None) -> tuple[str, str] | None:
    """`USER:PASS` → (user, password); None when not set."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise LmforgeError("--auth: expected USER:PASS (a user name, a colon, a password)")
    return user, password


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def login_check(auth: tuple[str, str] | None, api_key: str | None) -> Callable[[str, str], bool] | None:
    """Gradio's login callback: the --auth user and password, or any user name with the
    --api_key token as password. None when neither is set (no login)."""
    if auth is None and not api_key:
        return None

    def check(user: str, password: str) -> bool:
        ok_user = auth is not None and _same(user or "", auth[0]) & _same(password or "", auth[1])
        ok_key = bool(api_key) and _same(password or "", api_key)
        return bool(ok_user or ok_key)

    return check


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure(host: str, share: bool, has_login: bool, roots: Iterable[Path]) -> str | None:
    """The warning to print when the UI is reachable from other machines (None: loopback only);
    raises when it would be reachable without a login."""
    where = [f"--host {host}"] if not is_loopback(host) else []
    if share:
        where.append("--share true (a public gradio.live address)")
    if not where:
        return None
    reach = " and ".join(where)
    if not has_login:
        raise LmforgeError(
            f"{reach} would let anyone who reaches it train models and read the folders it may "
            "use; set --auth USER:PASS or --api_key TOKEN (or keep --host 127.0.0.1)"
        )
    folders = ", ".join(dict.fromkeys(str(r) for r in roots))
    plain = "" if share else "; the login travels unencrypted over plain HTTP"
    return (
        f"WARNING: the web UI is reachable beyond this machine ({reach}). Whoever logs in can "
        f"start training runs and read models and data under {folders}{plain}."
    )
