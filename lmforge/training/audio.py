"""Audio-LLM training features: chat rows with an `audio` clip → token ids whose audio placeholder is
expanded to the processor's count of audio tokens, labels on the answer only; and the collator that
reads the clips and computes the encoder features per batch.

Features (log-mel frames) are computed in the collator, not stored: a 30 s clip is ~1.5 MB of
float32 features, so a converted dataset keeps the clip path and the ids only. Each clip is read
once at tokenisation time too (to count its audio tokens and to report a bad file by row).
"""

from __future__ import annotations

from typing import Any

from lmforge.data.chat import IGNORE_INDEX
from lmforge.errors import LmforgeError


def _with_audio(messages: list[dict], placeholder: str) -> list[dict]:
    """The clip goes before the text of the first user turn (mdl-toolkit / Qwen2-Audio order)."""
    out, done = [], False
    for m in messages:
        if not done and m.get("role") == "user":
            m = {**m, "content": placeholder + (m.get("content") or "")}
            done = True
        out.append(m)
    if not done:
        raise LmforgeError("an audio row needs a user turn to attach its clip to")
    return out


def expand_audio(ids: list[int], labels: list[int] | None, audio_id: int, n: int):
    """Replace the single audio token by `n` copies (labels -100 there)."""
    if ids.count(audio_id) != 1:
        raise LmforgeError(f"expected one audio token per row, found {ids.count(audio_id)}")
    i = ids.index(audio_id)
    new_ids = ids[:i] + [audio_id] * n + ids[i + 1 :]
    if labels is None:
        return new_ids, None
    return new_ids, labels[:i] + [IGNORE_INDEX] * n + labels[i + 1 :]


def tokenize_audio_chat(ctx, rows):
    """Chat rows with an `audio` path column → input_ids, labels, audio (path kept for the collator)."""
    from lmforge.data.audio import load_audio
    from lmforge.data.chat import encode_chat_batch
    from lmforge.data.tokenize import encode_media_rows
    from lmforge.models.audio import audio_placeholder, num_audio_tokens, sampling_rate

    proc, cfg = ctx.processor, ctx.cfg
    tok, max_len = proc.tokenizer, cfg["max_length"]
    placeholder, audio_id, rate = audio_placeholder(proc), proc.audio_token_id, sampling_rate(proc)
    where = cfg.get("dataset")

    def encode(batch, idx):
        items, counts = [], []
        for messages, tools, path, i in zip(batch["messages"], batch["tools"], batch["audio"], idx):
            row = f"{where}: row {i + 1}"
            if not path:
                raise LmforgeError(f"{row}: empty `audio` (this model needs a clip per row)")
            counts.append(num_audio_tokens(proc, load_audio(path, rate, row=row)))
            items.append({"messages": _with_audio(messages, placeholder), "tools": tools})
        enc = encode_chat_batch(
            tok,
            items,
            max_length=None,
            train_on_prompt=cfg["train_on_prompt"],
            enable_thinking=cfg["enable_thinking"],
            mask_history=cfg.get("mask_history") or False,
        )
        out = {"input_ids": [], "labels": [], "audio": list(batch["audio"])}
        for ids, labels, n, i in zip(enc["input_ids"], enc["labels"], counts, idx):
            ids, labels = expand_audio(ids, labels, audio_id, n)
            if max_len and len(ids) > max_len:
                last_audio = len(ids) - 1 - ids[::-1].index(audio_id)
                if last_audio >= max_len:
                    raise LmforgeError(
                        f"{where}: row {i + 1}: the clip alone takes {n} audio tokens, its prompt "
                        f"{last_audio + 1} tokens, more than --max_length {max_len}"
                    )
                if cfg.get("truncation") == "left":
                    raise LmforgeError(
                        f"{where}: row {i + 1}: {len(ids)} tokens, over --max_length {max_len}; "
                        "--truncation left would cut the clip (use right or delete for audio rows)"
                    )
                ids, labels = ids[:max_len], labels[:max_len]
                if cfg.get("truncation") == "delete":  # dropped with the rows that train nothing
                    labels = [-100] * len(labels)
            out["input_ids"].append(ids)
            out["labels"].append(labels)
        return out

    return encode_media_rows(rows, encode, ctx, kind="audio", where=where)


class AudioCollator:
    """Right-pads ids/labels and computes the batch's audio features from the `audio` paths."""

    def __init__(self, processor, pad_id: int):
        self.processor, self.pad_id = processor, pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from lmforge.data.audio import load_audio
        from lmforge.models.audio import extract_features, sampling_rate

        rate = sampling_rate(self.processor)
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        waves = [load_audio(f["audio"], rate) for f in features]
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            **extract_features(self.processor, waves),
        }


# mdl-toolkit's `train` defaults (reference seed_002), used for audio LLMs where no flag or config
# file sets the key: LoRA r32/alpha32 on encoder, projector and decoder, merged at the end.
MDL_TRAIN_DEFAULTS: dict[str, Any] = {
    "tuner": "lora",
    "lora_rank": 32,
    "lora_alpha": 32.0,
    "lora_dropout": 0.0,
    "merge_lora": True,
    "learning_rate": 1e-4,
    "num_train_epochs": 1.0,
    "warmup_steps": 0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "activation_checkpointing": True,  # transformers' name for mdl-toolkit's --gradient-checkpointing
    "eval_steps": 500,
    "save_steps": 500,
    "save_total_limit": None,
}
_ADAPTER_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "merge_lora")


def apply_audio_defaults(cfg) -> bool:
    """Give an audio LLM's run mdl-toolkit's defaults (`MDL_TRAIN_DEFAULTS`) for every key the user
    did not set; True when the model is an audio LLM. A missing model is left to the model loader."""
    from lmforge.models.audio import is_audio_model_dir
    from lmforge.models.load import resolve_model_path

    name = cfg.get("model_name_or_path")
    if not name:
        return False
    try:
        path = resolve_model_path(
            name, save_dir=cfg["save_dir"], hidden_size=cfg["hidden_size"], use_moe=cfg["use_moe"]
        )
    except LmforgeError:
        return False
    if not is_audio_model_dir(path):
        return False
    from lmforge.tuners.apply import is_peft

    for key, value in MDL_TRAIN_DEFAULTS.items():
        if key == "activation_checkpointing" and "gradient_checkpointing" in cfg.explicit:
            continue  # the old name is read only while the new one is unset
        if key in _ADAPTER_KEYS and not is_peft(cfg):
            continue  # --tuner full: the adapter settings keep their plain defaults
        if key in cfg.values and key not in cfg.explicit:
            cfg.values[key] = value
            cfg.layered.add(key)
    return True
