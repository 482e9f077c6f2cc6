"""The Ollama `Modelfile` written next to an exported GGUF.

Ollama renders prompts with Go's text/template, not Jinja, so lmforge's ChatML template
(`data/template.py`) is restated here in Go-template syntax: every message is
`<|im_start|>{role}\\n{content}<|im_end|>\\n`, consecutive `tool` messages share one user turn of
`<tool_response>` blocks, and the prompt ends with `<|im_start|>assistant\\n`. Tool definitions,
assistant tool calls and `reasoning_content` are not carried over (the GGUF keeps the full Jinja
template in `tokenizer.chat_template` for runtimes that read it). tests/test_export.py renders
this template with a small Go-template interpreter and compares it with the Jinja template.
"""

from __future__ import annotations

import logging

from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

# Go text/template: actions in {{ }}, everything else literal (no trim markers, so the newlines
# below are exactly the ChatML newlines). `$prev` tracks the previous role to group tool messages.
GO_TEMPLATE = (
    '{{ $prev := "" }}{{ range .Messages }}'
    '{{ if and (eq $prev "tool") (ne .Role "tool") }}<|im_end|>\n{{ end }}'
    '{{ if eq .Role "tool" }}{{ if ne $prev "tool" }}<|im_start|>user{{ end }}'
    "\n<tool_response>\n{{ .Content }}\n</tool_response>"
    "{{ else }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "{{ $prev = .Role }}{{ end }}"
    '{{ if eq $prev "tool" }}<|im_end|>\n{{ end }}'
    "<|im_start|>assistant\n"
)

PROBE = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]


def template_matches_chatml(tokenizer) -> bool:
    """True when the tokenizer's own chat template renders lmforge's ChatML (which GO_TEMPLATE restates)."""
    from lmforge.data.template import render_chat

    if not getattr(tokenizer, "chat_template", None):
        return False
    try:
        got = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    except Exception:  # a foreign template may reject the probe; then it is not ours
        return False
    return got == render_chat(PROBE, add_generation_prompt=True)


def modelfile(
    tokenizer,
    gguf_name: str,
    *,
    system: str | None = None,
    generation: dict | None = None,
    source: str = "",
) -> str:
    """The Modelfile text: FROM, TEMPLATE, SYSTEM, stop and sampling PARAMETERs."""
    if not template_matches_chatml(tokenizer):
        log.warning(
            "the tokenizer's chat template is not lmforge's ChatML; the Modelfile's TEMPLATE is ChatML "
            "and may not match how the model was trained (check it before `ollama create`)"
        )
    if system and '"""' in system:
        raise LmforgeError('--system must not contain """ (it ends a Modelfile string)')
    lines = [f"# Written by lmforge export from {source}" if source else "# Written by lmforge export"]
    lines += [f"FROM ./{gguf_name}", f'TEMPLATE """{GO_TEMPLATE}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    vocab = tokenizer.get_vocab()
    for stop in dict.fromkeys(t for t in (tokenizer.eos_token, "<|im_end|>", "<|endoftext|>") if t in vocab):
        lines.append(f'PARAMETER stop "{stop}"')
    for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
        value = (generation or {}).get(key)
        if value is not None:
            name = "repeat_penalty" if key == "repetition_penalty" else key
            lines.append(f"PARAMETER {name} {value}")
    return "\n".join(lines) + "\n"
