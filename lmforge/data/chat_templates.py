"""Named chat templates for `--template NAME` (LLaMA-Factory / ms-swift names).

Each template is written here from the family's documented prompt layout; they are used for models
whose tokenizer has no template (base models, lmforge from-scratch models) or to override one.
`chatml` is lmforge's own ChatML (`data/template.py`), so MiniMind and from-scratch users keep their
exact ids. Templates for families without a tool-call format refuse `tools` / tool turns with a
one-line error rather than silently dropping them. Gemma-style templates refuse a system turn; the
renderer (`data/chat.py`) folds it into the first user turn.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from lmforge.data.template import CHAT_TEMPLATE
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

# Shared pieces (Jinja). `_NO_TOOLS` refuses tools for families without a tool format.
_NO_TOOLS = """{%- if tools -%}{{ raise_exception('this chat template has no tool format') }}{%- endif -%}
{%- for m in messages -%}{%- if m['role'] == 'tool' or m['tool_calls'] is defined and m['tool_calls'] -%}
{{ raise_exception('this chat template has no tool format') }}{%- endif -%}{%- endfor -%}"""

_QWEN_TOOLS = (
    "{%- if tools -%}{{- '<|im_start|>system\\n' + system_text + '\\n\\n# Tools\\n\\nYou may call one or more "
    "functions to assist with the user query.\\n\\nYou are provided with function signatures within "
    "<tools></tools> XML tags:\\n<tools>' -}}{%- for t in tools -%}{{- '\\n' + (t | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' -}}"
    "{%- elif system_text -%}{{- '<|im_start|>system\\n' + system_text + '<|im_end|>\\n' -}}{%- endif -%}"
)

_QWEN_CALLS = """{%- for call in (m['tool_calls'] if m['tool_calls'] is defined and m['tool_calls'] else []) -%}
{%- set fn = call['function'] if call['function'] is defined else call -%}
{%- if body or not loop.first -%}{{- '\\n' -}}{%- endif -%}
{{- '<tool_call>\\n{"name": "' + fn['name'] + '", "arguments": ' + (fn['arguments'] | tojson) + '}\\n</tool_call>' -}}
{%- endfor -%}"""

_QWEN_TOOL_TURN = """{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\\n<tool_response>\\n' + m['content'] + '\\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"""

# Qwen2.5: ChatML with a default system prompt, Hermes-style tool calls.
QWEN = (
    "{%- set system_text = messages[0]['content'] if messages and messages[0]['role'] == 'system' "
    "else 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' -%}"
    + _QWEN_TOOLS.replace("{%- elif system_text -%}", "{%- else -%}")
    + """{%- for m in messages -%}
{%- if m['role'] == 'system' -%}
{%- elif m['role'] == 'assistant' -%}{%- set body = m['content'] or '' -%}
{{- '<|im_start|>assistant\\n' + body -}}"""
    + _QWEN_CALLS
    + """{{- '<|im_end|>\\n' -}}
{%- elif m['role'] == 'tool' -%}"""
    + _QWEN_TOOL_TURN
    + """{%- else -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"""
)

# Qwen3: ChatML, reasoning shown only on assistant turns after the last user query (the final answer
# always gets a think block, empty when it has no reasoning); an empty think block after the
# generation prompt when thinking is switched off.
QWEN3 = (
    "{%- set system_text = messages[0]['content'] if messages and messages[0]['role'] == 'system' "
    "else '' -%}"
    + _QWEN_TOOLS
    + """{%- set ns = namespace(last_query=-1) -%}
{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_query = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in messages -%}
{%- if m['role'] == 'system' -%}
{%- elif m['role'] == 'assistant' -%}
{%- set body = m['content'] or '' -%}
{%- set reasoning = m['reasoning_content'] if m['reasoning_content'] is string else '' -%}
{%- if '</think>' in body -%}
{%- set reasoning = body.split('</think>')[0].split('<think>')[-1].strip('\\n') -%}
{%- set body = body.split('</think>')[-1].lstrip('\\n') -%}
{%- endif -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if loop.index0 > ns.last_query and (reasoning or loop.last or enable_thinking is defined and enable_thinking is false) -%}
{{- '<think>\\n' + reasoning + '\\n</think>\\n\\n' if reasoning else '<think>\\n\\n</think>\\n\\n' -}}
{%- endif -%}
{{- body -}}"""
    + _QWEN_CALLS
    + """{{- '<|im_end|>\\n' -}}
{%- elif m['role'] == 'tool' -%}"""
    + _QWEN_TOOL_TURN
    + """{%- else -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}
{%- endif -%}"""
)

# Llama 3: header tokens around each role, <|eot_id|> ends a turn; tools listed in the system turn,
# calls as JSON, results in `ipython` turns.
LLAMA3 = """{{- bos_token -}}
{%- set system_text = messages[0]['content'] if messages and messages[0]['role'] == 'system' else '' -%}
{%- if system_text or tools -%}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system_text -}}
{%- if tools -%}{{- ('\\n\\n' if system_text else '') + 'You can call these functions:' -}}
{%- for t in tools -%}{{- '\\n' + (t | tojson) -}}{%- endfor -%}{%- endif -%}
{{- '<|eot_id|>' -}}
{%- endif -%}
{%- for m in messages -%}
{%- if m['role'] == 'system' -%}
{%- elif m['role'] == 'assistant' -%}
{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' + (m['content'] or '') -}}
{%- for call in (m['tool_calls'] if m['tool_calls'] is defined and m['tool_calls'] else []) -%}
{%- set fn = call['function'] if call['function'] is defined else call -%}
{{- '{"name": "' + fn['name'] + '", "parameters": ' + (fn['arguments'] | tojson) + '}' -}}
{%- endfor -%}{{- '<|eot_id|>' -}}
{%- else -%}
{{- '<|start_header_id|>' + ('ipython' if m['role'] == 'tool' else m['role']) + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"""

# Llama 2: [INST] blocks, the system prompt inside <<SYS>> of the first one.
LLAMA2 = (
    _NO_TOOLS
    + """{%- set system_text = messages[0]['content'] if messages and messages[0]['role'] == 'system' else '' -%}
{%- for m in messages if m['role'] != 'system' -%}
{%- if m['role'] == 'user' -%}
{%- set text = ('<<SYS>>\\n' + system_text + '\\n<</SYS>>\\n\\n' + m['content']) if loop.first and system_text else m['content'] -%}
{{- bos_token + '[INST] ' + text.strip() + ' [/INST]' -}}
{%- else -%}{{- ' ' + (m['content'] or '').strip() + ' ' + eos_token -}}{%- endif -%}
{%- endfor -%}"""
)

# Mistral: [INST] blocks after one bos, the answer glued to [/INST], eos after each answer; a
# system prompt is prefixed to the first user turn.
MISTRAL = (
    _NO_TOOLS
    + """{{- bos_token -}}
{%- set system_text = messages[0]['content'] if messages and messages[0]['role'] == 'system' else '' -%}
{%- for m in messages if m['role'] != 'system' -%}
{%- if m['role'] == 'user' -%}
{{- '[INST] ' + ((system_text + '\\n\\n') if loop.first and system_text else '') + m['content'] + ' [/INST]' -}}
{%- else -%}{{- (m['content'] or '') + eos_token -}}{%- endif -%}
{%- endfor -%}"""
)

# Gemma: user / model turns only; a system turn is refused (lmforge folds it into the first user turn).
GEMMA = (
    _NO_TOOLS
    + """{{- bos_token -}}
{%- for m in messages -%}
{%- if m['role'] == 'system' -%}{{ raise_exception('System role not supported') }}{%- endif -%}
{{- '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\\n' + (m['content'] or '') + '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"""
)

# Phi-3: <|role|> lines, <|end|> ends a turn.
PHI3 = (
    _NO_TOOLS
    + """{%- for m in messages -%}
{{- '<|' + m['role'] + '|>\\n' + (m['content'] or '') + '<|end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"""
)

# DeepSeek-V3 / R1: bos + system text, <｜User｜> / <｜Assistant｜> markers, eos after each answer.
# `deepseekr1` shows reasoning as <think> blocks on answers after the last user turn only.
_DEEPSEEK = (
    _NO_TOOLS
    + """{{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}{{- messages[0]['content'] -}}{%- endif -%}
{%- set ns = namespace(last_query=-1) -%}
{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_query = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in messages -%}
{%- if m['role'] == 'user' -%}{{- '<｜User｜>' + m['content'] -}}
{%- elif m['role'] == 'assistant' -%}
{%- set reasoning = m['reasoning_content'] if m['reasoning_content'] is string else '' -%}
{{- '<｜Assistant｜>' -}}
{%- if THINK and reasoning and loop.index0 > ns.last_query -%}{{- '<think>\\n' + reasoning + '\\n</think>\\n\\n' -}}{%- endif -%}
{{- (m['content'] or '') + eos_token -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<｜Assistant｜>' -}}{%- endif -%}"""
)
DEEPSEEK3 = _DEEPSEEK.replace("THINK and ", "false and ")
DEEPSEEKR1 = _DEEPSEEK.replace("THINK and ", "")

# Granite 3: <|start_of_role|>role<|end_of_role|> ... <|end_of_text|>; tools in an available_tools turn.
GRANITE = """{%- if tools -%}
{{- '<|start_of_role|>available_tools<|end_of_role|>' -}}
{%- for t in tools -%}{{- ('\\n' if not loop.first else '') + (t | tojson) -}}{%- endfor -%}
{{- '<|end_of_text|>\\n' -}}
{%- endif -%}
{%- for m in messages -%}
{%- set role = 'tool_response' if m['role'] == 'tool' else m['role'] -%}
{{- '<|start_of_role|>' + role + '<|end_of_role|>' + (m['content'] or '') -}}
{%- if m['tool_calls'] is defined and m['tool_calls'] -%}{{- '<|tool_call|>' + (m['tool_calls'] | tojson) -}}{%- endif -%}
{{- '<|end_of_text|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_of_role|>assistant<|end_of_role|>' -}}{%- endif -%}"""

# Base models: the turns' texts one after another, eos after each answer.
EMPTY = (
    _NO_TOOLS
    + """{%- for m in messages -%}
{{- (m['content'] or '') + (eos_token if m['role'] == 'assistant' else '') -}}
{%- endfor -%}"""
)

TEMPLATES: dict[str, str] = {
    "chatml": CHAT_TEMPLATE,
    "qwen": QWEN,
    "qwen2_5": QWEN,
    "qwen3": QWEN3,
    "llama3": LLAMA3,
    "llama2": LLAMA2,
    "mistral": MISTRAL,
    "gemma": GEMMA,
    "phi3": PHI3,
    "deepseek3": DEEPSEEK3,
    "deepseekr1": DEEPSEEKR1,
    "granite": GRANITE,
    "empty": EMPTY,
}


def template_name(tokenizer: Any) -> str:
    """The `--template` name whose text the tokenizer carries, else "the model's own template"."""
    text = getattr(tokenizer, "chat_template", None)
    for name, tmpl in TEMPLATES.items():
        if text == tmpl:
            return name
    return "the model's own chat template"


def apply_template(tokenizer: Any, name: str | None) -> Any:
    """Install `--template NAME` on the tokenizer (in place; returned). `None` keeps the tokenizer's own
    template (lmforge's ChatML when it has none)."""
    if not name:
        return tokenizer
    key = name.strip().lower()
    if key not in TEMPLATES:
        raise LmforgeError(f"--template {name}: unknown template; choose one of {', '.join(TEMPLATES)}")
    if getattr(tokenizer, "chat_template", None) not in (None, TEMPLATES[key]):
        log.info("chat template: --template %s replaces the tokenizer's own template", key)
    tokenizer.chat_template = TEMPLATES[key]
    missing = missing_markers(tokenizer, TEMPLATES[key])
    if missing:
        log.warning(
            "chat template %s: %s not in the tokenizer's vocabulary (tokenised as plain text)",
            key,
            ", ".join(missing),
        )
    return tokenizer


_MARKER = re.compile(r"<\|[a-z_]+\|>|<｜[^｜]+｜>|<(?:start|end)_of_turn>|\[/?INST\]")


def missing_markers(tokenizer: Any, template: str) -> list[str]:
    """The template's control markers (`<|eot_id|>`, `[INST]`, ...) the vocabulary lacks."""
    vocab = tokenizer.get_vocab()
    return sorted({m for m in _MARKER.findall(template) if m not in vocab})
