"""The Ollama `Modelfile` written next to an exported GGUF.

Ollama renders prompts with Go's text/template, not Jinja, so each `--template` family of
`data/chat_templates.py` is restated here in Go-template syntax over `.Messages` (`.Role`,
`.Content`), with the family's stop tokens as `PARAMETER stop`. The tokenizer's template is matched
by name (`template_name`); an unnamed template falls back to ChatML with a warning.

What carries over: system / user / assistant turns exactly, tool results (`tool` turns) for the
families that have them, the family's default system prompt (Qwen2.5) and folding the system text
into the first user turn (Gemma, as lmforge's renderer does). Not carried: tool definitions,
assistant tool calls and reasoning (the GGUF keeps the full Jinja template in
`tokenizer.chat_template` for runtimes that read it), and Llama 2's whitespace trimming of turns
(Go templates have no trim). A BOS token the runtime adds itself (`tokenizer.ggml.add_bos_token`)
is left out of the template, so the prompt is not given two. tests/test_export.py renders these
templates with a small Go-template interpreter and compares them with the Jinja templates.
"""

from __future__ import annotations

import logging

from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

# Go text/template: actions in {{ }}, everything else literal (no trim markers, so newlines below
# are exactly the template's newlines). `$prev` tracks the previous role to group tool messages.
_SYS_FIRST = (
    '{{ range $i, $m := .Messages }}{{ if and (eq $i 0) (eq .Role "system") }}{{ $sys = .Content }}'
    "{{ end }}{{ end }}"
)
_CHATML_TURNS = (
    '{{ $prev := "" }}{{ range .Messages }}'
    '{{ if and (eq $prev "tool") (ne .Role "tool") }}<|im_end|>\n{{ end }}'
    '{{ if eq .Role "tool" }}{{ if ne $prev "tool" }}<|im_start|>user{{ end }}'
    "\n<tool_response>\n{{ .Content }}\n</tool_response>"
    "SKIP_SYSTEM{{ else }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "{{ $prev = .Role }}{{ end }}"
    '{{ if eq $prev "tool" }}<|im_end|>\n{{ end }}'
    "<|im_start|>assistant\n"
)
_SKIP = '{{ else if eq .Role "system" }}'
CHATML = _CHATML_TURNS.replace("SKIP_SYSTEM", "")
_QWEN_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN = (
    f'{{{{ $sys := "{_QWEN_DEFAULT}" }}}}{_SYS_FIRST}<|im_start|>system\n{{{{ $sys }}}}<|im_end|>\n'
    + _CHATML_TURNS.replace("SKIP_SYSTEM", _SKIP)
)
QWEN3 = (
    '{{ $sys := "" }}'
    + _SYS_FIRST
    + "{{ if $sys }}<|im_start|>system\n{{ $sys }}<|im_end|>\n{{ end }}"
    + _CHATML_TURNS.replace("SKIP_SYSTEM", _SKIP)
)
LLAMA3 = (
    '{{BOS}}{{ $sys := "" }}'
    + _SYS_FIRST
    + "{{ if $sys }}<|start_header_id|>system<|end_header_id|>\n\n{{ $sys }}<|eot_id|>{{ end }}"
    '{{ range .Messages }}{{ if ne .Role "system" }}<|start_header_id|>'
    '{{ if eq .Role "tool" }}ipython{{ else }}{{ .Role }}{{ end }}'
    "<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
LLAMA2 = (
    '{{ $sys := "" }}' + _SYS_FIRST + "{{ $first := true }}"
    '{{ range .Messages }}{{ if ne .Role "system" }}'
    '{{ if eq .Role "user" }}{{ if $first }}{{BOS}}{{ else }}{{EVERY_BOS}}{{ end }}[INST] '
    "{{ if and $first $sys }}<<SYS>>\n{{ $sys }}\n<</SYS>>\n\n{{ end }}{{ .Content }} [/INST]"
    "{{ else }} {{ .Content }} {{EOS}}{{ end }}{{ $first = false }}{{ end }}{{ end }}"
)
MISTRAL = (
    '{{BOS}}{{ $sys := "" }}' + _SYS_FIRST + "{{ $first := true }}"
    '{{ range .Messages }}{{ if ne .Role "system" }}'
    '{{ if eq .Role "user" }}[INST] {{ if and $first $sys }}{{ $sys }}\n\n{{ end }}{{ .Content }} [/INST]'
    "{{ else }}{{ .Content }}{{EOS}}{{ end }}{{ $first = false }}{{ end }}{{ end }}"
)
GEMMA = (
    '{{ $sys := "" }}' + _SYS_FIRST + "{{BOS}}{{ $folded := false }}"
    '{{ range .Messages }}{{ if ne .Role "system" }}<start_of_turn>'
    '{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}\n'
    '{{ if and (eq .Role "user") (not $folded) $sys }}{{ $sys }}\n\n{{ end }}{{ .Content }}<end_of_turn>\n'
    '{{ if eq .Role "user" }}{{ $folded = true }}{{ end }}{{ end }}{{ end }}'
    "<start_of_turn>model\n"
)
PHI3 = "{{ range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n"
DEEPSEEK = (
    '{{BOS}}{{ $sys := "" }}' + _SYS_FIRST + "{{ $sys }}"
    '{{ range .Messages }}{{ if eq .Role "user" }}<｜User｜>{{ .Content }}'
    '{{ else if eq .Role "assistant" }}<｜Assistant｜>{{ .Content }}{{EOS}}{{ end }}{{ end }}<｜Assistant｜>'
)
GRANITE = (
    "{{ range .Messages }}<|start_of_role|>"
    '{{ if eq .Role "tool" }}tool_response{{ else }}{{ .Role }}{{ end }}'
    "<|end_of_role|>{{ .Content }}<|end_of_text|>\n{{ end }}<|start_of_role|>assistant<|end_of_role|>"
)
EMPTY = '{{ range .Messages }}{{ .Content }}{{ if eq .Role "assistant" }}{{EOS}}{{ end }}{{ end }}'

# --template name → (Go template, the family's turn-ending tokens used as stop strings)
GO_TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chatml": (CHATML, ("<|im_end|>", "<|endoftext|>")),
    "qwen": (QWEN, ("<|im_end|>", "<|endoftext|>")),
    "qwen2_5": (QWEN, ("<|im_end|>", "<|endoftext|>")),
    "qwen3": (QWEN3, ("<|im_end|>", "<|endoftext|>")),
    "llama3": (LLAMA3, ("<|eot_id|>", "<|end_of_text|>")),
    "llama2": (LLAMA2, ()),
    "mistral": (MISTRAL, ()),
    "gemma": (GEMMA, ("<end_of_turn>",)),
    "phi3": (PHI3, ("<|end|>", "<|endoftext|>")),
    "deepseek3": (DEEPSEEK, ()),
    "deepseekr1": (DEEPSEEK, ()),
    "granite": (GRANITE, ("<|end_of_text|>",)),
    "empty": (EMPTY, ()),
}


def family(tokenizer) -> str:
    """The `--template` name of the tokenizer's chat template ("chatml" when it is not a named one)."""
    from lmforge.data.chat_templates import template_name

    if not getattr(tokenizer, "chat_template", None):
        return "chatml"
    name = template_name(tokenizer)
    if name not in GO_TEMPLATES:
        log.warning(
            "the tokenizer's chat template is not one of lmforge's --template names; the Modelfile's "
            "TEMPLATE is ChatML and may not match how the model was trained (check it before `ollama create`)"
        )
        return "chatml"
    return name


def go_template(name: str, tokenizer, add_bos: bool) -> str:
    """Family `name`'s Go template with the tokenizer's BOS / EOS texts filled in."""
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    text = GO_TEMPLATES[name][0]
    return (
        text.replace("{{BOS}}", "" if add_bos else bos).replace("{{EVERY_BOS}}", bos).replace("{{EOS}}", eos)
    )


def stop_tokens(name: str, tokenizer) -> list[str]:
    """The family's turn-ending tokens the vocabulary has, and the tokenizer's EOS."""
    vocab = tokenizer.get_vocab()
    wanted = (*GO_TEMPLATES[name][1], tokenizer.eos_token)
    return [t for t in dict.fromkeys(wanted) if t and t in vocab]


def modelfile(
    tokenizer,
    gguf_name: str,
    *,
    add_bos: bool,
    system: str | None = None,
    generation: dict | None = None,
    source: str = "",
) -> str:
    """The Modelfile text: FROM, TEMPLATE, SYSTEM, stop and sampling PARAMETERs."""
    if system and '"""' in system:
        raise LmforgeError('--system must not contain """ (it ends a Modelfile string)')
    name = family(tokenizer)
    template = go_template(name, tokenizer, add_bos)
    lines = [f"# Written by lmforge export from {source}" if source else "# Written by lmforge export"]
    lines += [f"# Chat template: {name}", f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for stop in stop_tokens(name, tokenizer):
        lines.append(f'PARAMETER stop "{stop}"')
    for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
        value = (generation or {}).get(key)
        if value is not None:
            key_name = "repeat_penalty" if key == "repetition_penalty" else key
            lines.append(f"PARAMETER {key_name} {value}")
    return "\n".join(lines) + "\n"
