"""Constrained decoding for `response_format` and `tool_choice` with llguidance (as vLLM does).

A request's constraint becomes one llguidance grammar: `json_object` any JSON object,
`json_schema` the client's schema, `tool_choice` "required" or a named function one
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` block whose arguments follow the tool's
`parameters` schema (the markup lmforge's chat templates render and `infer/text.py`'s `ChatDeltas` parses;
arguments not declared in `properties` are refused unless the schema sets `additionalProperties`,
as OpenAI's strict mode does). JSON is compact (no free whitespace), so a model cannot pad forever. Every decoding step each
constrained row gets llguidance's token bitmask over the model's vocabulary; tokens outside it get
-inf before sampling, and the sampled token advances the row's matcher. Once the grammar is complete
only an end-of-sequence token is allowed.

Tag tokens that the tokenizer holds as added tokens (`<tool_call>`) are matched by id: llguidance
keeps added tokens apart from text, so a quoted literal could only be spelled out of plain pieces.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from lmforge.infer.text import TOOL_CLOSE, TOOL_OPEN
from lmforge.serve.protocol import bad_request

MISSING = "needs the llguidance package for constrained decoding: pip install 'lmforge[serve]'"
COMPACT = {"whitespace_flexible": False}


def _llguidance():
    try:
        import llguidance
        import llguidance.hf  # noqa: F401
    except ImportError:
        return None
    return llguidance


def response_format_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema a `response_format` asks for (None: free text); 400 for a shape we cannot serve."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request(
                "response_format.json_schema.schema: expected a JSON schema object",
                param="response_format.json_schema.schema",
            )
        return schema
    raise bad_request(
        f"response_format.type {kind!r} is not supported: use text, json_object or json_schema",
        param="response_format.type",
    )


def forced_tools(tools: list[dict] | None, tool_choice: Any) -> list[dict] | None:
    """The functions a `tool_choice` forces a call to ("required": any of `tools`; a named function:
    that one); None when the model may answer freely. 400 for a choice that names nothing served."""
    if tool_choice in (None, "auto", "none"):
        return None
    functions = [t.get("function", {}) for t in tools or [] if t.get("type", "function") == "function"]
    if tool_choice == "required":
        chosen = functions
    elif isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        name = tool_choice["function"].get("name")
        chosen = [f for f in functions if f.get("name") == name]
        if not chosen:
            served = ", ".join(str(f.get("name")) for f in functions) or "none"
            raise bad_request(
                f"tool_choice names function {name!r}, which is not in tools (tools: {served})",
                param="tool_choice",
            )
    else:
        raise bad_request(
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    if not chosen:
        raise bad_request('tool_choice "required" needs at least one function in tools', param="tools")
    return chosen


def tool_call_schema(functions: list[dict]) -> dict[str, Any]:
    """JSON schema of one tool-call object for any of `functions`."""
    options = []
    for f in functions:
        params = dict(f.get("parameters") or {"type": "object"})
        if "properties" in params:  # only the declared arguments, as OpenAI's strict mode
            params.setdefault("additionalProperties", False)
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": f.get("name")}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "x-guidance": COMPACT}


class Grammars:
    """llguidance's view of the served tokenizer (built once, ~1 s) and the grammars built on it."""

    def __init__(self, tokenizer, vocab_size: int, eos_ids: list[int]):
        self.tokenizer, self.vocab_size, self.eos_ids = tokenizer, vocab_size, list(eos_ids)
        self._info = None

    @property
    def info(self):
        if self._info is None:
            self._info = _llguidance().hf.from_tokenizer(
                self.tokenizer, n_vocab=self.vocab_size, eos_token=self.eos_ids
            )
        return self._info

    def _literal(self, text: str) -> str:
        """A lark terminal for `text`: the added token's id when it is one, else the quoted text."""
        tid = self.tokenizer.convert_tokens_to_ids(text)
        if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid is not None:
            return f"<[{tid}]>"
        return json.dumps(text)

    def build(self, schema: dict | None, functions: list[dict] | None, param: str) -> str | None:
        """The grammar for a response schema or forced tool call; 400 when it cannot be served."""
        if schema is None and functions is None:
            return None
        lib = _llguidance()
        if lib is None:
            raise bad_request(f"{param} {MISSING}", param=param)
        matcher = lib.LLMatcher
        if functions is not None:
            body = json.dumps(tool_call_schema(functions))
            lark = (
                f'start: {self._literal(TOOL_OPEN)} "\\n" call "\\n" {self._literal(TOOL_CLOSE)}\n'
                f"call: %json {body}\n"
            )
            grammar = matcher.grammar_from_lark(lark)
        else:
            try:
                grammar = matcher.grammar_from_json_schema(schema, defaults=COMPACT)
            except ValueError as e:
                raise bad_request(f"{param}: not a usable JSON schema ({e})", param=param) from None
        error = matcher.validate_grammar(grammar, self.info)
        if error:
            raise bad_request(
                f"{param}: cannot constrain decoding to it: {error.splitlines()[0]}", param=param
            )
        return grammar

    def matcher(self, grammar: str):
        return _llguidance().LLMatcher(self.info, grammar, log_level=0)

    # the decode loop's grammar hooks (decode/loop.py)
    def mask(self, logits: torch.Tensor, rows: list) -> None:
        mask_rows(logits, rows)

    def advance(self, row, token: int) -> str | None:
        return advance(row, token)


def allowed(matcher, vocab: int) -> torch.Tensor:
    """Boolean (V,) mask of the tokens `matcher` accepts next."""
    import llguidance.torch as lt

    bitmask = lt.allocate_token_bitmask(1, vocab)
    lt.fill_next_token_bitmask(matcher, bitmask, 0)
    bits = (bitmask[0].unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.flatten()[:vocab].bool()


def mask_rows(logits: torch.Tensor, rows: list) -> None:
    """In place: -inf for every token a constrained row's grammar forbids next."""
    for i, row in enumerate(rows):
        if row.matcher is not None:
            ok = allowed(row.matcher, logits.shape[-1]).to(logits.device)
            logits[i].masked_fill_(~ok, float("-inf"))


def advance(row, token: int) -> str | None:
    """Feed the sampled token to the row's matcher; an error message when the grammar broke."""
    if row.matcher is None or row.matcher.is_stopped():
        return None
    if not row.matcher.consume_token(token) or row.matcher.is_error():
        return f"constrained decoding failed: {row.matcher.get_error().splitlines()[0]}"
    return None
