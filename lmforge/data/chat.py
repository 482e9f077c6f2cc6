"""The one owner of chat rendering: conversation → text → token ids + loss labels, for training and
inference alike.

`render` builds the text of a conversation (the inference prompt with `add_generation_prompt`),
`encode_rows` builds training rows (ids + labels), `encode_prompt` / `encode_completion` build the
prompt and prompt-and-completion ids of the RL, preference and KTO stages, `check_rows` is the guard
run before training. All go through `_apply`, so the prompt a served model sees is the text its
training rows started with.

Two engines, one contract:

- lmforge's ChatML (`data/template.py`, the template of the shipped tokenizer and `--template chatml`)
  keeps its exact segment-wise encoding, so MiniMind and from-scratch ids are unchanged.
- Any other template is rendered by `tokenizer.apply_chat_template` on the whole conversation and
  tokenised once; loss masks come from character spans mapped onto tokens through offsets. The span
  of assistant turn *i* starts where the conversation up to turn *i* rendered with the generation
  prompt ends, and ends where the conversation through turn *i* ends (trailing whitespace excluded).
  Templates that render an earlier answer differently from the last one (Qwen3 drops old reasoning)
  are handled by locating the end of the history form of the turn (see `_history_end`). No family
  has hand-written rules.

Before rows are built, messages are normalised: `None` fields dropped, JSON-string `tools` /
`tool_calls` / `arguments` parsed, and a system turn folded into the first user turn for templates
that refuse the system role (Gemma), said once in the log.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

from lmforge.data.template import CHAT_TEMPLATE, encode_chatml_batch, render_chat, truncate_rows
from lmforge.errors import LmforgeError

log = logging.getLogger("lmforge")

IGNORE_INDEX = -100
_SENTINEL = "\u2063lmforge-turn-end\u2063"
_folded_logged: set[int] = set()


class TemplateMismatch(LmforgeError):
    """The template renders a prefix of a conversation differently from the whole conversation."""


def is_lmforge_chatml(tokenizer: Any) -> bool:
    return getattr(tokenizer, "chat_template", None) in (None, "", CHAT_TEMPLATE)


def template_label(tokenizer: Any) -> str:
    from lmforge.data.chat_templates import template_name

    return template_name(tokenizer)


# ---------------------------------------------------------------------------------------------
# Normalising messages


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _clean_call(call: Any) -> Any:
    if not isinstance(call, dict):
        return call
    fn = call.get("function", call)
    fn = dict(fn, arguments=_parse_json(fn.get("arguments", {})))
    return {"type": "function", "function": fn} if "function" in call else fn


def _clean_message(message: dict) -> dict:
    out = {k: v for k, v in message.items() if v is not None}
    out.setdefault("content", "")
    if "tool_calls" in out:
        calls = _parse_json(out["tool_calls"])
        calls = [calls] if isinstance(calls, dict) else calls
        if isinstance(calls, list):
            out["tool_calls"] = [_clean_call(c) for c in calls] or None
        if not out.get("tool_calls"):
            out.pop("tool_calls")
    for key in ("thinking", "reasoning"):  # aliases of reasoning_content
        if key in out and "reasoning_content" not in out:
            out["reasoning_content"] = out.pop(key)
    return out


def parse_tools(tools: Any) -> list | None:
    tools = _parse_json(tools)
    if isinstance(tools, dict):
        tools = [tools]
    return tools or None


@lru_cache(maxsize=32)
def _accepts_system(template: str, special: tuple) -> bool:
    """Whether the template renders a system turn (Gemma-style templates raise or drop it)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    probe = [{"role": "system", "content": "\u2062sys\u2062"}, {"role": "user", "content": "u"}]
    try:
        text, _ = render_jinja_template(conversations=[probe], chat_template=template, **dict(special))
    except Exception:  # jinja2 TemplateError from raise_exception, or a template bug
        return False
    return "\u2062sys\u2062" in text[0]


def fold_system(tokenizer: Any, messages: list[dict]) -> list[dict]:
    """`messages` with a leading system turn folded into the first user turn when the tokenizer's
    template has no system role (as LLaMA-Factory does for Gemma); unchanged otherwise."""
    template = getattr(tokenizer, "chat_template", None)
    if not messages or messages[0].get("role") != "system" or not isinstance(template, str):
        return messages
    if _accepts_system(template, tuple(sorted(_special_kwargs(tokenizer).items()))):
        return messages
    if id(template) not in _folded_logged:
        _folded_logged.add(id(template))
        log.info("chat template: it has no system role; the system text is put before the first user turn")
    system, rest = messages[0].get("content") or "", list(messages[1:])
    for i, m in enumerate(rest):
        if m.get("role") == "user":
            rest[i] = dict(
                m, content=(system + "\n\n" + (m.get("content") or "")) if system else m.get("content")
            )
            return rest
    return [{"role": "user", "content": system}, *rest] if system else rest


def prepare(tokenizer: Any, messages: list[dict], tools: Any = None) -> tuple[list[dict], list | None]:
    """Messages and tools as the template gets them (see module docstring)."""
    msgs = [_clean_message(m) for m in messages]
    return fold_system(tokenizer, msgs), parse_tools(tools)


# ---------------------------------------------------------------------------------------------
# Rendering


def _special_kwargs(tokenizer: Any) -> dict:
    return {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}


def _apply(tokenizer: Any, msgs: list[dict], tools: list | None, gen: bool, thinking: bool) -> str:
    """The text `apply_chat_template(msgs, tools=tools, add_generation_prompt=gen, tokenize=False,
    enable_thinking=thinking)` gives, without its per-call message normalisation (`prepare` already
    dropped the `None` fields it drops): a row renders several prefixes. An empty conversation
    renders too (the prompt of an answer at turn 0)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    text, _ = render_jinja_template(
        conversations=[msgs],
        tools=tools,
        chat_template=tokenizer.get_chat_template(None, tools),
        add_generation_prompt=gen,
        **{**tokenizer.special_tokens_map, "enable_thinking": thinking},
    )
    return text[0]


def _safe_apply(tokenizer, msgs, tools, gen, thinking) -> str:
    try:
        return _apply(tokenizer, msgs, tools, gen, thinking)
    except LmforgeError:
        raise
    except Exception as e:  # jinja2 errors: raise_exception in the template, undefined fields
        raise LmforgeError(f"chat template ({template_label(tokenizer)}): {e}") from None


def _tool_names(tools: list | None, msgs: list[dict]) -> list[str]:
    names = []
    for spec in tools or []:
        fn = spec.get("function", spec) if isinstance(spec, dict) else {}
        names.append(fn.get("name"))
    for m in msgs:
        for call in m.get("tool_calls") or []:
            fn = call.get("function", call) if isinstance(call, dict) else {}
            names.append(fn.get("name"))
    return [n for n in names if isinstance(n, str) and n]


def _check_tools_rendered(tokenizer: Any, msgs: list[dict], tools: list | None, text: str) -> None:
    """Tools and tool calls the template silently left out are refused, not dropped."""
    missing = [n for n in _tool_names(tools, msgs) if n not in text]
    if missing:
        raise LmforgeError(
            f"chat template ({template_label(tokenizer)}): the tool {missing[0]!r} does not appear in the "
            "rendered conversation (the template has no tool format); pass --template NAME with one "
            "(qwen, qwen3, llama3, granite, chatml)"
        )


def render(
    tokenizer: Any,
    messages: list[dict],
    tools: Any = None,
    *,
    add_generation_prompt: bool = False,
    enable_thinking: bool = True,
) -> str:
    """The text of a conversation in the tokenizer's template (the inference prompt with
    `add_generation_prompt=True`)."""
    if is_lmforge_chatml(tokenizer):
        return render_chat(messages, tools, add_generation_prompt, enable_thinking)
    msgs, tools = prepare(tokenizer, messages, tools)
    text = _safe_apply(tokenizer, msgs, tools, add_generation_prompt, enable_thinking)
    _check_tools_rendered(tokenizer, msgs, tools, text)
    return text


def encode_prompt(
    tokenizer: Any, messages: list[dict], tools: Any = None, *, enable_thinking: bool = True
) -> list[int]:
    """Token ids of the inference prompt: the conversation and the generation prompt."""
    text = render(tokenizer, messages, tools, add_generation_prompt=True, enable_thinking=enable_thinking)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------------
# Assistant spans


def _first_diff(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _mismatch(tokenizer: Any, what: str, a: str, b: str) -> TemplateMismatch:
    p = _first_diff(a, b)
    return TemplateMismatch(
        f"chat template ({template_label(tokenizer)}): {what} at character {p}: "
        f"{a[p : p + 30]!r} vs {b[p : p + 30]!r}; pass --template NAME to use another template"
    )


def _history_end(
    tokenizer, msgs, tools, i: int, head: str, last_form: str, thinking: bool
) -> tuple[str, int]:
    """Where assistant turn `i` ends when it is rendered as history (a later user turn follows).

    The turn is rendered with a sentinel user turn after it; its history form is the text between
    `head` and the sentinel turn. It ends like its last-turn form ends (content, end-of-turn
    tokens): the longest tail of `last_form` found there marks the end.
    """
    probe = _safe_apply(
        tokenizer, [*msgs[: i + 1], {"role": "user", "content": _SENTINEL}], tools, False, thinking
    )
    stop = probe.find(_SENTINEL, len(head))
    if not probe.startswith(head) or stop < 0:
        raise _mismatch(tokenizer, f"assistant turn {i + 1} renders differently as history", probe, head)
    region = probe[len(head) : stop]
    lo, hi = 0, len(last_form)
    while lo < hi:  # longest suffix of last_form occurring in region (monotone in length)
        mid = (lo + hi + 1) // 2
        if last_form[-mid:] in region:
            lo = mid
        else:
            hi = mid - 1
    end = region.rfind(last_form[-lo:]) + lo if lo else 0
    return probe, len(head) + end


def assistant_spans(
    tokenizer: Any, msgs: list[dict], tools: list | None, full: str, thinking: bool = True
) -> list[tuple[int, int]]:
    """Character spans `[start, end)` of every assistant turn's trained text in `full`."""
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        head = _safe_apply(tokenizer, msgs[:i], tools, True, thinking)
        if not full.startswith(head):
            raise _mismatch(
                tokenizer,
                f"the prompt of assistant turn {i + 1} (with the generation prompt) is not how the "
                "whole conversation starts",
                head,
                full,
            )
        upto = _safe_apply(tokenizer, msgs[: i + 1], tools, False, thinking)
        if not upto.startswith(head):
            raise _mismatch(tokenizer, "the generation prompt differs from the assistant header", head, upto)
        if full.startswith(upto):
            end, text = len(upto), upto
        else:
            text, end = _history_end(tokenizer, msgs, tools, i, head, upto[len(head) :].rstrip(), thinking)
            if not full.startswith(text[:end]):
                raise _mismatch(
                    tokenizer, f"assistant turn {i + 1} renders differently in context", text, full
                )
        while end > len(head) and text[end - 1].isspace():
            end -= 1
        spans.append((len(head), end))
    return spans


# ---------------------------------------------------------------------------------------------
# Tokens and labels


def _labels(
    ids: list[int],
    offsets: list[tuple[int, int]],
    spans: list[tuple[int, int]],
    train_on_prompt: bool,
    mask_history: bool,
) -> list[int]:
    """Per-token labels: a token is trained when its characters overlap a trained span."""
    if mask_history and spans:
        floor = spans[-2][1] if len(spans) > 1 else 0
        spans = spans[-1:]
    else:
        floor = 0
    labels, k = [], 0
    for tid, (a, b) in zip(ids, offsets):  # spans and offsets both ascend: one sweep
        while k < len(spans) and a >= spans[k][1]:
            k += 1
        inside = k < len(spans) and (b > spans[k][0] or (a == b and a >= spans[k][0]))
        labels.append(tid if inside or (train_on_prompt and a >= floor) else IGNORE_INDEX)
    return labels


def token_spans(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans → token index ranges `[first, last + 1)` of the tokens overlapping each."""
    out = []
    for s, e in spans:
        idx = [k for k, (a, b) in enumerate(offsets) if a < e and b > s]
        out.append((idx[0], idx[-1] + 1) if idx else (0, 0))
    return out


def encode_rows(
    tokenizer: Any,
    rows: list[dict],
    *,
    train_on_prompt: bool = False,
    mask_history: bool = False,
    enable_thinking: bool = True,
    with_spans: bool = False,
) -> dict[str, list]:
    """Chat rows → `input_ids` + `labels` in the tokenizer's own template (see module docstring).

    The whole rendered text of each row is tokenised once (no per-segment encoding), so ids equal
    `apply_chat_template(messages, tools=tools)` exactly. `with_spans` adds `spans` (per row, the
    token ranges of each assistant turn) for the guard and `data check`.
    """
    texts, all_spans = [], []
    for row in rows:
        messages = row.get("messages") if row.get("messages") is not None else row.get("conversations")
        if messages is None:
            raise ValueError(f"chat row needs a 'messages' list; got keys {sorted(row)}")
        msgs, tools = prepare(tokenizer, messages, row.get("tools"))
        full = _safe_apply(tokenizer, msgs, tools, False, enable_thinking)
        _check_tools_rendered(tokenizer, msgs, tools, full)
        texts.append(full)
        all_spans.append(assistant_spans(tokenizer, msgs, tools, full, enable_thinking))
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out: dict[str, list] = {"input_ids": [], "labels": []}
    if with_spans:
        out["spans"], out["text"] = [], texts
    for ids, offsets, spans in zip(enc["input_ids"], enc["offset_mapping"], all_spans):
        out["input_ids"].append(list(ids))
        out["labels"].append(_labels(ids, offsets, spans, train_on_prompt, mask_history))
        if with_spans:
            out["spans"].append(token_spans(offsets, spans))
    return out


def encode_chat_batch(
    tokenizer: Any,
    rows: list[dict],
    max_length: int | None = None,
    train_on_prompt: bool = False,
    enable_thinking: bool = True,
    mask_history: bool = False,
    truncation: str = "right",
) -> dict[str, list[list[int]]]:
    """Canonical chat rows (``{"messages": [...], "tools": ...}``) → ``input_ids`` + SFT ``labels``
    (-100 outside assistant turns unless ``train_on_prompt``; with ``mask_history`` only the last
    assistant turn, and with both, the text after the previous assistant turn too). lmforge's ChatML
    is encoded segment-wise (`data/template.py`), any other template by `encode_rows`. Rows longer
    than ``max_length`` are cut from the end (``truncation="left"``: from the start; ``"delete"``:
    their labels become all -100); callers drop rows left with no trainable token."""
    opts = {
        "train_on_prompt": train_on_prompt,
        "enable_thinking": enable_thinking,
        "mask_history": mask_history,
    }
    if is_lmforge_chatml(tokenizer):
        out = encode_chatml_batch(tokenizer, rows, **opts)
    else:
        out = encode_rows(tokenizer, rows, **opts)
    return truncate_rows(out, max_length, truncation)


def encode_chat(tokenizer: Any, messages: list[dict], tools: Any = None, **kwargs: Any) -> dict:
    """One conversation: ``{"input_ids": [...], "labels": [...]}`` (``kwargs``: `encode_chat_batch`'s)."""
    batch = encode_chat_batch(tokenizer, [{"messages": messages, "tools": tools}], **kwargs)
    return {"input_ids": batch["input_ids"][0], "labels": batch["labels"][0]}


def encode_completion(
    tokenizer: Any,
    prompt: list[dict],
    completion: list[dict],
    tools: Any = None,
    *,
    enable_thinking: bool = True,
) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of a preference / KTO side: the prompt ids are exactly the
    inference prompt's, the completion ids the rest of the whole conversation's ids."""
    head = render(tokenizer, prompt, tools, add_generation_prompt=True, enable_thinking=enable_thinking)
    full = render(tokenizer, list(prompt) + list(completion), tools, enable_thinking=enable_thinking)
    if not full.startswith(head):
        raise _mismatch(
            tokenizer,
            "the prompt (with the generation prompt) is not how the conversation starts",
            head,
            full,
        )
    if is_lmforge_chatml(tokenizer):  # lmforge's ChatML: the two pieces encoded apart, as always
        ids = tokenizer([head, full[len(head) :]], add_special_tokens=False)["input_ids"]
        return list(ids[0]), list(ids[1])
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    cut = next((k for k, (a, _) in enumerate(offsets) if a >= len(head)), len(ids))
    prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    if ids[:cut] != list(prompt_ids):
        raise guard_error(tokenizer, "the prompt", list(prompt_ids), ids)
    return ids[:cut], ids[cut:]


def guard_error(tokenizer: Any, where: str, prompt_ids: list[int], row_ids: list[int]) -> TemplateMismatch:
    """The one-line error when a prompt tokenised alone is not the start of the training row."""
    n = min(len(prompt_ids), len(row_ids))
    p = next((k for k in range(n) if prompt_ids[k] != row_ids[k]), n)

    def tok(ids: list[int]) -> str:
        return repr(tokenizer.convert_ids_to_tokens(ids[p])) if p < len(ids) else "(end)"

    return TemplateMismatch(
        f"chat template ({template_label(tokenizer)}): {where} rendered for inference tokenises differently "
        f"from the training row at token {p}: {tok(prompt_ids)} (inference) vs {tok(row_ids)} (training); "
        "pass --template NAME to use another template"
    )


def check_rows(
    tokenizer: Any, rows: list[dict], *, enable_thinking: bool = True, where: str = "data"
) -> None:
    """The guard run before training: for each assistant turn of `rows`, the inference prompt up to
    that turn (with the generation prompt) followed by the turn's trained tokens must be the
    training row's ids. Raises `TemplateMismatch` naming the template and the first differing token."""
    enc = encode_chat_batch(tokenizer, rows, enable_thinking=enable_thinking)
    for r, (row, ids, labels) in enumerate(zip(rows, enc["input_ids"], enc["labels"])):
        messages = row.get("messages") if row.get("messages") is not None else row.get("conversations")
        for i, m in enumerate(messages):
            if m.get("role") != "assistant":
                continue
            prompt = encode_prompt(tokenizer, messages[:i], row.get("tools"), enable_thinking=enable_thinking)
            if ids[: len(prompt)] != prompt or labels[len(prompt) : len(prompt) + 1] == [IGNORE_INDEX]:
                raise guard_error(
                    tokenizer, f"{where}: row {r + 1}: the prompt of assistant turn {i + 1}", prompt, ids
                )
