"""The one place that says what a model argument names, for every command (train, chat, infer,
serve, eval, merge, export, webui).

A model argument is, in this order: a folder as given (a model folder with `config.json`, or a run
folder whose newest complete `checkpoint-N` is used); a MiniMind weight name inside `--save_dir`
(`NAME` → `save_dir/NAME_<hidden_size>[_moe]`; when no hidden size is given, as chat / serve / eval
allow, the one `NAME_<digits>[_moe]` there, several → one line listing them); a folder
`save_dir/NAME`; a hub name already in the local cache. MiniMind `.pth` weights (given as a path, or found by name in `--save_dir`) are not loaded
as they are: the error names the exact `lmforge import minimind` command that converts them.
Adapter folders (`adapter_config.json`) are found by `find_adapter`.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from lmforge.errors import LmforgeError


def minimind_weight_dir(save_dir: str | Path, name: str, hidden_size: int | None, use_moe: bool) -> Path:
    """MiniMind's naming: `--save_weight NAME` → `save_dir/NAME_<hidden_size>[_moe]`."""
    suffix = f"_{hidden_size}" if hidden_size else ""
    return Path(save_dir) / f"{name}{suffix}{'_moe' if use_moe else ''}"


def minimind_matches(save_dir: str | Path, name: str, use_moe: bool, *, suffix: str = "") -> list[Path]:
    """Every `save_dir/NAME_<digits>[_moe]<suffix>` (folders when suffix is empty, else files)."""
    folder = Path(save_dir)
    if not folder.is_dir():
        return []
    moe = "_moe" if use_moe else ""
    pattern = re.compile(rf"^{re.escape(name)}_\d+{moe}{re.escape(suffix)}$")
    found = [p for p in folder.iterdir() if pattern.match(p.name)]
    return sorted(p for p in found if (p.is_file() if suffix else p.is_dir()))


def latest_model_dir(path: Path) -> Path | None:
    """A folder holding weights: the folder itself, else its newest complete checkpoint."""
    if (path / "config.json").exists():
        return path
    from lmforge.runs import latest_checkpoint

    ckpt = latest_checkpoint(path)
    return Path(ckpt) if ckpt else None


def import_command(pth: Path) -> str:
    """The `lmforge import minimind` line that turns MiniMind `.pth` weights into the folder that
    the same name then finds (`out/full_sft_512.pth` → `out/full_sft_512`)."""
    out = pth.with_suffix("")
    return f"lmforge import minimind {shlex.quote(str(pth))} --output_dir {shlex.quote(str(out))}"


def _pth_error(pth: Path, typed: str) -> LmforgeError:
    return LmforgeError(
        f"model {typed!r}: {pth} holds MiniMind .pth weights; convert them once with "
        f"`{import_command(pth)}` and run this command again"
    )


def _one_match(matches: list[Path], typed: str, what: str) -> Path | None:
    if len(matches) > 1:
        names = ", ".join(str(m) for m in matches)
        raise LmforgeError(f"model {typed!r}: several {what} match ({names}); pass --hidden_size to pick one")
    return matches[0] if matches else None


def _named_candidates(name: str, save_dir: str, hidden_size: int | None, use_moe: bool) -> list[Path]:
    """Folders a bare name may mean inside save_dir, most specific first."""
    cands = []
    if hidden_size:
        cands.append(minimind_weight_dir(save_dir, name, hidden_size, use_moe))
    cands.append(Path(save_dir) / (f"{name}_moe" if use_moe else name))
    if use_moe:
        cands.append(Path(save_dir) / name)
    if not hidden_size and not any(c.is_dir() for c in cands):  # no size given: the one NAME_<n>
        only = _one_match(minimind_matches(save_dir, name, use_moe), name, "MiniMind weight folders")
        if only is not None:
            cands.append(only)
    return cands


def _check_pth(name: str, save_dir: str, hidden_size: int | None, use_moe: bool) -> None:
    """Stop with the import command when the name means MiniMind `.pth` weights."""
    if name.endswith(".pth"):
        if Path(name).is_file():
            raise _pth_error(Path(name), name)
        return
    if not save_dir or "/" in name or os.sep in name:
        return
    if hidden_size:
        pth = minimind_weight_dir(save_dir, name, hidden_size, use_moe).with_suffix(".pth")
        if pth.is_file():
            raise _pth_error(pth, name)
        return
    only = _one_match(minimind_matches(save_dir, name, use_moe, suffix=".pth"), name, "MiniMind .pth files")
    if only is not None:
        raise _pth_error(only, name)


def resolve_model_path(
    name_or_path: str, *, save_dir: str = "out", hidden_size: int | None = None, use_moe: bool = False
) -> str:
    """Turn what the user typed into a loadable folder or a cached hub name (its files checked:
    `lmforge.models.weights`)."""
    candidates = [Path(name_or_path)]
    if save_dir and os.sep not in name_or_path and "/" not in name_or_path:
        candidates += _named_candidates(name_or_path, save_dir, hidden_size, use_moe)
    from lmforge.models.weights import check_model_files

    for cand in candidates:
        if cand.is_dir():
            found = latest_model_dir(cand)
            if found is None:
                raise LmforgeError(f"{cand}: no config.json and no complete checkpoint-N folder inside")
            check_model_files(found)  # a corrupt or truncated file: one line naming it
            return str(found)
    _check_pth(name_or_path, save_dir, hidden_size, use_moe)
    cached = _hub_cache(name_or_path)
    if cached:
        return cached
    tried = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise LmforgeError(
        f"model {name_or_path!r} not found (looked at {tried}; hub names must already be "
        "in the local cache: lmforge never downloads; --from_weight none starts from scratch)"
    )


def _hub_cache(name: str) -> str | None:
    """A hub name (`org/model`) already in the local cache, checked; None when it is not there."""
    if name.count("/") != 1 or name.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import snapshot_download

        cached = snapshot_download(name, local_files_only=True)
    except Exception:
        return None
    from lmforge.models.weights import check_model_files

    check_model_files(cached)
    return cached


def find_adapter(
    name: str,
    save_dir: str,
    model_dir: str | None = None,
    *,
    hidden_size: int | None = None,
    use_moe: bool = False,
    flag: str = "--lora_weight",
) -> str:
    """A PEFT adapter folder: as given, inside `save_dir` (also MiniMind's `save_dir/lora/NAME_<hidden>
    [_moe]`, the one such folder when no hidden size is given), or beside / inside the model's run
    folder."""
    cands = [Path(name), Path(save_dir) / name]
    lora_dir = Path(save_dir, "lora")
    if hidden_size:
        cands.append(minimind_weight_dir(lora_dir, name, hidden_size, use_moe))
    else:
        cands += minimind_matches(lora_dir, name, use_moe)[:1] or [lora_dir / name]
    if model_dir and not Path(name).is_absolute():
        cands += [Path(model_dir) / name, Path(model_dir).parent / name]
    for cand in cands:
        if (cand / "adapter_config.json").exists():
            from lmforge.models.weights import check_model_files

            check_model_files(cand)
            return str(cand)
    raise LmforgeError(f"{flag} {name!r}: no adapter_config.json in {', '.join(map(str, cands))}")


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter folder on its own: `adapter_config.json` and no `config.json`."""
    return Path(path, "adapter_config.json").is_file() and not Path(path, "config.json").exists()


def adapter_base(path: str | Path) -> str | None:
    """The base model an adapter folder names (`base_model_name_or_path`), or None."""
    import json

    cfg_file = Path(path, "adapter_config.json")
    try:
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LmforgeError(f"{cfg_file}: not readable JSON ({e})") from None
    return data.get("base_model_name_or_path") if isinstance(data, dict) else None


def model_sizes(path: str) -> dict[str, int]:
    """hidden_size / num_hidden_layers of a model folder's config (its text part), without loading it."""
    import json

    cfg_file = Path(path, "config.json")
    if not cfg_file.is_file():
        return {}
    data = json.loads(cfg_file.read_text(encoding="utf-8"))
    text = data.get("text_config") or data
    return {k: text[k] for k in ("hidden_size", "num_hidden_layers") if isinstance(text.get(k), int)}


def check_sizes(path: str, wanted: dict[str, int | None], *, flags: dict[str, str] | None = None) -> None:
    """Size flags the user typed must describe the model they load (MiniMind passes them with
    `--from_weight`); a contradiction is one line instead of being silently ignored."""
    have = model_sizes(path)
    for key, want in wanted.items():
        if want is None or key not in have or have[key] == want:
            continue
        flag = (flags or {}).get(key, key)
        raise LmforgeError(
            f"--{flag} {want}: the model loaded from {path} has {key} {have[key]}; drop the flag "
            "or load a model of that size"
        )
