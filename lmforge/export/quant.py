"""`--format gptq | awq | bnb`: weight-quantised Hugging Face folders, on a CUDA GPU.

These go through the maintained libraries (transformers' `GPTQConfig` with gptqmodel + optimum,
AutoAWQ, bitsandbytes via `BitsAndBytesConfig`); none of them quantises on a CPU, so on a machine
without CUDA the command stops with one line naming what is missing. For CPU deployment use
`--format gguf --gguf_type q8_0`. Calibration text for GPTQ / AWQ: `--quantization_dataset`, else
lmforge's synthetic pretraining corpus.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.export.args import ExportArgs

NEEDS = {
    "bnb": ("bitsandbytes",),
    "gptq": ("gptqmodel", "optimum"),
    "awq": ("awq",),
}
PIP = {"bitsandbytes": "bitsandbytes", "gptqmodel": "gptqmodel", "optimum": "optimum", "awq": "autoawq"}


def check_available(fmt: str, bits: int) -> None:
    """Stop early (before loading anything) when this machine cannot quantise to `fmt`."""
    import torch

    if fmt == "awq" and bits != 4:
        raise LmforgeError("--format awq quantises to 4 bits only (--quantization_bit 4)")
    if not torch.cuda.is_available():
        raise LmforgeError(
            f"--format {fmt} quantises on a CUDA GPU and none is available; on CPU export "
            "--format gguf --gguf_type q8_0 instead"
        )
    missing = [m for m in NEEDS[fmt] if importlib.util.find_spec(m) is None]
    if missing:
        pkgs = " ".join(PIP[m] for m in missing)
        raise LmforgeError(f"--format {fmt} needs {', '.join(missing)}: pip install {pkgs}")


def calibration_texts(path: str | None, limit: int = 256) -> list[str]:
    """Up to `limit` non-empty texts from a .txt / .jsonl file (default: the synthetic corpus)."""
    import json

    if path is None:
        import tempfile

        from lmforge.data.synth import synth

        with tempfile.TemporaryDirectory(prefix="lmforge-calib-") as folder:
            return calibration_texts(synth(folder, seed=0, scale=0.05, lang="both")["pretrain"], limit)
    if not Path(path).is_file():
        raise LmforgeError(f"--quantization_dataset {path}: file not found")
    texts: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.endswith((".jsonl", ".json")):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise LmforgeError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                text = row.get("text") if isinstance(row, dict) else None
                if not isinstance(text, str):
                    raise LmforgeError(f'{path}:{line_no}: "text" must be a string')
            else:
                text = line.strip()
            texts.append(text)
            if len(texts) >= limit:
                break
    if not texts:
        raise LmforgeError(f"--quantization_dataset {path}: no text in it")
    return texts


def quantize(model_dir: str, tokenizer, out: Path, args: ExportArgs) -> None:
    """Quantise the HF model in `model_dir` into `out` (GPU only, see `check_available`)."""
    import torch

    bits = args.quantization_bit
    if args.format == "awq":
        from awq import AutoAWQForCausalLM

        model = AutoAWQForCausalLM.from_pretrained(model_dir)
        quant_config = {"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"}
        model.quantize(
            tokenizer,
            quant_config=quant_config,
            calib_data=calibration_texts(args.quantization_dataset, args.quantization_nsamples),
        )
        model.save_quantized(str(out))
        tokenizer.save_pretrained(str(out))
        return
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, GPTQConfig

    if args.format == "bnb":
        config = BitsAndBytesConfig(
            load_in_4bit=bits == 4, load_in_8bit=bits == 8, bnb_4bit_compute_dtype=torch.bfloat16
        )
    else:
        config = GPTQConfig(
            bits=bits,
            dataset=calibration_texts(args.quantization_dataset, args.quantization_nsamples),
            tokenizer=tokenizer,
        )
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=config, device_map="auto")
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
