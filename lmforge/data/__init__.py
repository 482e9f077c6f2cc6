"""Data layer: every input format becomes one of a few canonical row shapes, then tokens.

Canonical rows (what `formats.to_canonical` yields, what templates and stages consume):

- ``pretrain``:   ``{"text": str}``
- ``chat``:       ``{"messages": [Message, ...], "tools": str | None}``
                  where ``Message = {"role": "system"|"user"|"assistant"|"tool", "content": str,
                  "reasoning_content": str | None, "tool_calls": str | None}``; ``tools`` and
                  ``tool_calls`` are JSON strings (OpenAI tool specs / calls), as MiniMind stores them.
- ``preference``: ``{"prompt": [Message], "chosen": [Message], "rejected": [Message]}``
                  (chosen/rejected hold the assistant turn(s) only).
- ``kto``:        ``{"prompt": [Message], "completion": [Message], "label": bool}``
- ``prompt``:     ``{"prompt": [Message], "answer": str | None}`` (RL prompts, optional ground truth).

Vision datasets (rows with ``images`` / ``videos``): chat, preference, KTO and prompt rows also carry
``"images": [absolute path, ...]`` and ``"videos": [absolute path, ...]``, one per ``<image>`` /
``<video>`` placeholder in the messages (vision.py; docs/vision.md).

Modules: formats.py (detect + validate + convert), load.py (files, registry, sampling, mixing,
val split, streaming), chat.py (the one chat renderer: any template → ids + loss masks, inference
prompts, the template guard), chat_templates.py (`--template` names), template.py (lmforge's ChatML
and its exact segment-wise masks), packing.py, convert.py (the
tokenised folder of `data convert` / `--tokenized_path` and its fingerprint), check.py (`data
check`), audio.py (read + resample clips of the CSV `audio` column, synthetic tones), vision.py (image
and video rows: paths, placeholders, pixel bounds, frame sampling), synth.py.
"""

KINDS = ("pretrain", "chat", "preference", "kto", "prompt")
