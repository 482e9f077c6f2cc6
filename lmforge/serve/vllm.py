"""`lmforge serve --backend vllm`: hand the model to vLLM's own OpenAI server.

A thin wrapper: lmforge resolves what the user named (run folder, checkpoint, MiniMind weight name,
adapter folder, `--adapters`) to plain folders and execs `python -m vllm.entrypoints.openai.api_server`
with the matching flags. vLLM then owns batching, sampling defaults (from the model's
`generation_config.json`) and the HTTP API. Without vLLM or without CUDA it stops with one line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.infer.args import GenerationArgs
from lmforge.serve.args import ServeArgs

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts


def check_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise LmforgeError(
            "--backend vllm: vLLM is not installed (pip install 'lmforge[vllm]' on a CUDA machine, "
            "ideally in its own environment: docs/install.md); --backend hf serves on any machine"
        )
    import torch

    if not torch.cuda.is_available():
        raise LmforgeError("--backend vllm needs a CUDA GPU and this machine has none; use --backend hf")


def _rank(path: str) -> int:
    with open(Path(path) / "adapter_config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    return max([int(cfg.get("r") or 8), *map(int, (cfg.get("rank_pattern") or {}).values())])


def vllm_argv(
    args: ServeArgs, gen: GenerationArgs, adapters: dict[str, str], api_key: str | None
) -> list[str]:
    """The `vllm.entrypoints.openai.api_server` flags for these lmforge flags."""
    from lmforge.models.load import read_run_defaults
    from lmforge.models.locate import (
        adapter_base,
        check_sizes,
        find_adapter,
        is_adapter_dir,
        resolve_model_path,
    )

    name = str(args.model or args.weight)
    kw = {"hidden_size": args.hidden_size, "use_moe": args.use_moe}
    main_adapter = args.lora_weight
    if is_adapter_dir(name):
        main_adapter, name = main_adapter or name, adapter_base(name) or ""
    path = resolve_model_path(name, save_dir=args.save_dir, **kw)
    check_sizes(path, {"hidden_size": args.hidden_size, "num_hidden_layers": args.num_hidden_layers})
    main_adapter = main_adapter or read_run_defaults(path).get("lora_weight")
    served = args.served_model_name or str(args.model or args.weight).rstrip("/")
    loras = {n: find_adapter(p, args.save_dir, path, **kw, flag="--adapters") for n, p in adapters.items()}
    if main_adapter:  # the adapter keeps the served name; the bare base is served beside it
        loras = {served: find_adapter(str(main_adapter), args.save_dir, path, **kw), **loras}
        served = f"{served}-base"
    argv = ["--model", path, "--served-model-name", served, "--host", args.host, "--port", str(args.port)]
    argv += [
        "--max-num-seqs",
        str(args.max_batch_size),
        "--dtype",
        "auto" if args.dtype == "auto" else args.dtype,
    ]
    if api_key:
        argv += ["--api-key", api_key]
    if gen.seed is not None:
        argv += ["--seed", str(gen.seed)]
    if getattr(args, "template", None):  # vLLM takes the template text itself
        from lmforge.data.chat_templates import TEMPLATES

        if args.template.lower() not in TEMPLATES:
            raise LmforgeError(f"--template {args.template}: unknown; choose one of {', '.join(TEMPLATES)}")
        argv += ["--chat-template", TEMPLATES[args.template.lower()]]
    if getattr(args, "allowed_local_media_path", None):  # vLLM's own flags of the same meaning
        argv += ["--allowed-local-media-path", args.allowed_local_media_path]
    if getattr(args, "limit_mm_per_prompt", None):
        from lmforge.serve.vision import parse_limit_mm

        argv += ["--limit-mm-per-prompt", json.dumps(parse_limit_mm(args.limit_mm_per_prompt))]
    if loras:
        rank = max(_rank(p) for p in loras.values())
        argv += ["--enable-lora", "--max-lora-rank", str(next((r for r in _LORA_RANKS if r >= rank), rank))]
        argv += ["--lora-modules", *(f"{n}={p}" for n, p in loras.items())]
    return argv + shlex.split(args.vllm_args or "")


def run_vllm(args: ServeArgs, gen: GenerationArgs, adapters: dict[str, str], api_key: str | None) -> int:
    check_vllm()
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *vllm_argv(args, gen, adapters, api_key),
    ]
    os.execv(sys.executable, argv)
    return 0  # not reached
