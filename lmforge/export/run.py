"""`lmforge export`: check the flags, load the source, write the chosen format into a staging
folder (`OUT.tmp-<pid>`) and rename it into place when complete, then optionally push it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.export.args import ExportArgs
from lmforge.runs import check_output, staged_folder

log = logging.getLogger("lmforge")
GGUF_NAME = "model.gguf"


def _generation_params(model) -> dict[str, Any]:
    gc = model.generation_config.to_dict()
    return (
        {k: gc.get(k) for k in ("temperature", "top_p", "top_k", "repetition_penalty")}
        if gc.get("do_sample")
        else {}
    )


def _write_gguf(src, folder: Path, args: ExportArgs, name: str) -> str:
    from lmforge.export.gguf_file import adds_bos, write_gguf
    from lmforge.export.hf import model_card
    from lmforge.export.ollama import modelfile

    counts = write_gguf(src.model, src.tokenizer, folder / GGUF_NAME, args.gguf_type, name)
    system = args.system if args.system is not None else src.run_args.get("system")
    text = modelfile(
        src.tokenizer,
        GGUF_NAME,
        add_bos=adds_bos(src.tokenizer),
        system=system,
        generation=_generation_params(src.model),
        source=src.description,
    )
    (folder / "Modelfile").write_text(text, encoding="utf-8")
    n_params = sum(p.numel() for p in src.model.parameters())
    usage = f"""
`{GGUF_NAME}` ({args.gguf_type}; tensors: {", ".join(f"{n} {k}" for k, n in sorted(counts.items()))}).

```bash
llama-cli -m {GGUF_NAME} -cnv           # llama.cpp
ollama create my-model -f Modelfile     # Ollama, then: ollama run my-model
```
"""
    (folder / "README.md").write_text(model_card(src, "A GGUF file", n_params, usage), encoding="utf-8")
    return f"{GGUF_NAME} ({args.gguf_type}) + Modelfile"


def export(args: ExportArgs) -> tuple[Path, str, str | None]:
    """Run the export; returns (output folder, what was written, hub URL or None)."""
    if not args.model:
        raise LmforgeError("export: name the model: `lmforge export RUN_OR_MODEL --output_dir OUT`")
    if not args.output_dir:
        raise LmforgeError("export: --output_dir is required (where the export is written)")
    out = Path(args.output_dir)
    check_output(out, args.overwrite)
    if args.format in ("gptq", "awq", "bnb"):
        from lmforge.export.quant import check_available

        check_available(args.format, args.quantization_bit)
    if args.format == "gguf":
        import importlib.util

        if importlib.util.find_spec("gguf") is None:
            raise LmforgeError('--format gguf needs the gguf package: pip install "lmforge[export]"')
    from lmforge.export.source import ensure_chat_ready, load_source

    if args.max_shard_size != "50GB" and args.format != "hf":
        raise LmforgeError(
            f"--max_shard_size (--export_size) splits --format hf folders; --format {args.format} is not split"
        )
    src = load_source(args)
    if args.template:
        from lmforge.data.chat_templates import apply_template

        apply_template(src.tokenizer, args.template)
    ensure_chat_ready(src)
    if args.format == "gguf":
        from lmforge.export.gguf_file import check_exportable

        check_exportable(src.model)
    info = {"command": "export", "format": args.format, "source": src.description}
    with staged_folder(out, args.overwrite, info) as folder:
        if args.format == "hf":
            from lmforge.export.hf import write_hf

            write_hf(src, folder, args.max_shard_size)
            what = "Hugging Face safetensors folder"
        elif args.format == "gguf":
            what = _write_gguf(src, folder, args, name=Path(src.description.split(" + ")[0]).name or "model")
        else:
            from lmforge.export.hf import write_hf
            from lmforge.export.quant import quantize

            merged = folder.with_name(folder.name + "-merged")
            merged.mkdir()
            try:
                write_hf(src, merged)
                del src.model
                quantize(str(merged), src.tokenizer, folder, args)
            finally:
                shutil.rmtree(merged, ignore_errors=True)
            what = f"{args.format} {args.quantization_bit}-bit folder"
    url = None
    if args.push_to_hub:
        from lmforge.export.hub import push_folder

        url = push_folder(out, args.push_to_hub, args.hub_token, args.hub_private)
    return out, what, url
