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

Modules, in the order a dataset passes through them: assemble.py (a run's datasets end to end:
load, cap, split, tokenise, cache), specifier.py (files, folders, registry names, `#N`), readers.py
(raw rows of JSONL / JSON / CSV / Parquet / Arrow / .txt), load.py (rows → canonical Arrow rows:
mixing, sampling, val split, streaming, the row cache), formats.py (detect + validate + convert)
with messages.py (turns → canonical messages), tokenize.py (canonical rows → token features),
chat.py (the one chat renderer: any template → ids + loss masks, inference prompts, the template
guard), chat_templates.py (`--template` names), template.py (lmforge's ChatML and its exact
segment-wise masks), packing.py, convert.py (the one tokenised cache: `data convert` /
`--tokenized_path` folders and their fingerprint), fingerprint.py (the one code fingerprint both
caches use), check.py (`data check`), audio.py (read + resample clips of the CSV `audio` column,
synthetic tones), vision.py (image and video rows: paths, placeholders, pixel bounds, frame
sampling), synth.py with synth_facts.py, synth_rl.py, synth_vision.py (synthetic corpora).
"""

KINDS = ("pretrain", "chat", "preference", "kto", "prompt")
