"""The model an export starts from: a model or run folder, or an adapter merged into its base.

Adapters (given with `--adapter`, as the source itself, or named by the run's `lora_weight`) are
merged by `tuners.merge.load_merged`, the code behind `lmforge merge`, so an exported model gives
the same logits as base + adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.export.args import ExportArgs


@dataclass
class Source:
    model: Any
    tokenizer: Any
    path: str
    """The model folder (the base model's, for a merged adapter)."""
    adapter: str | None = None
    run_args: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return f"{self.path} + adapter {self.adapter}" if self.adapter else self.path


def _is_adapter_source(path: Path) -> bool:
    """An adapter folder, or a run folder whose final save / newest checkpoint is an adapter."""
    from lmforge.runs import latest_checkpoint

    if not path.is_dir() or (path / "config.json").exists():
        return False
    if (path / "adapter_config.json").exists():
        return True
    ckpt = latest_checkpoint(path)
    return bool(ckpt and (Path(ckpt) / "adapter_config.json").exists())


def load_source(args: ExportArgs) -> Source:
    """Load the model and tokenizer to export (float weights, on CPU)."""
    import torch

    from lmforge.models.load import load_tokenizer_for, read_run_defaults
    from lmforge.models.locate import find_adapter, resolve_model_path
    from lmforge.tuners.merge import MergeArgs, load_merged

    if not args.model:
        raise LmforgeError("export: name the model: `lmforge export RUN_OR_MODEL --output_dir OUT`")
    adapter, base = args.adapter, args.model
    if not adapter and _is_adapter_source(Path(args.model)):
        adapter, base = args.model, None
    run: dict[str, Any] = {}
    if not adapter:
        base = resolve_model_path(
            args.model, save_dir=args.save_dir, hidden_size=args.hidden_size, use_moe=args.use_moe
        )
        run = read_run_defaults(base)
        if run.get("lora_weight"):  # a run trained on top of an adapter: export base + that adapter
            adapter = find_adapter(str(run["lora_weight"]), args.save_dir, base, flag="lora_weight (run)")
    if adapter:
        merge_args = MergeArgs(
            adapter=adapter,
            model=base,
            save_dir=args.save_dir,
            hidden_size=args.hidden_size,
            use_moe=args.use_moe,
            dtype=args.dtype,
            output_dir=args.output_dir,
        )
        model, tokenizer, info = load_merged(merge_args)
        run = run or read_run_defaults(str(info["adapter"]))
        return Source(model.eval(), tokenizer, str(info["base"]), str(info["adapter"]), run)
    from transformers import AutoModelForCausalLM

    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).eval()
    return Source(model, load_tokenizer_for(base), str(base), None, run)


def ensure_chat_ready(src: Source) -> None:
    """Install lmforge's ChatML template on a tokenizer that has the ChatML tokens but no template,
    and make generation stop at the tokenizer's end-of-turn token."""
    from lmforge.data.template import CHAT_TEMPLATE

    tok = src.tokenizer
    if not getattr(tok, "chat_template", None) and "<|im_start|>" in tok.get_vocab():
        tok.chat_template = CHAT_TEMPLATE
    gc = src.model.generation_config
    eos = gc.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    gc.eos_token_id = ids[0] if len(ids) == 1 else (ids or None)
    if gc.pad_token_id is None:
        gc.pad_token_id = tok.pad_token_id
