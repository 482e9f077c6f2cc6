"""A small interpreter for the subset of Go's text/template that Ollama documents for a Modelfile
TEMPLATE: text and `{{ }}` actions (with `{{-` / `-}}` trimming), fields of the root (`.System`,
`.Prompt`, `.Response`, `.Messages`) and of a message (`.Role`, `.Content`), `$` and declared
variables (`:=` declares, `=` assigns), `if` / `else if` / `else` / `end`, `range` (with
`$i, $m :=`), and the functions eq, ne, and, or, not, len. Anything else raises, so a template that
needs more than Ollama documents fails the test instead of rendering something else."""

from __future__ import annotations

import re
from typing import Any

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+')


def _lex(template: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", s)] with Go's trim markers applied to the neighbouring text."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        parts.append(("text", text))
        parts.append(("action", m.group(2).strip()))
        pos = m.end()
        if m.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    parts.append(("text", template[pos:]))
    return parts


class _Parser:
    """Nodes: ("text", s), ("action", s), ("if" | "range", expr, body, else_body)."""

    def __init__(self, parts: list[tuple[str, str]]):
        self.parts, self.i = parts, 0

    def block(self, stops: tuple[str, ...]) -> tuple[list, str | None]:
        nodes: list = []
        while self.i < len(self.parts):
            kind, s = self.parts[self.i]
            self.i += 1
            if kind == "text":
                nodes.append(("text", s))
            elif s in ("end", "else") or s.startswith("else if "):
                if not stops or (s not in stops and "else" not in stops):
                    raise SyntaxError(f"unexpected {{{{ {s} }}}}")
                return nodes, s
            elif s.startswith(("if ", "range ")):
                word, expr = s.split(" ", 1)
                nodes.append(self.branch(word, expr))
            else:
                nodes.append(("action", s))
        if stops:
            raise SyntaxError("missing {{ end }}")
        return nodes, None

    def branch(self, word: str, expr: str) -> tuple:
        body, ended = self.block(("end", "else"))
        other: list = []
        if ended == "else":
            other, _ = self.block(("end",))
        elif ended and ended.startswith("else if "):  # shares the final {{ end }}
            other = [self.branch("if", ended[len("else if ") :])]
        return (word, expr, body, other)


def _truthy(v: Any) -> bool:
    return bool(v)  # Go: false, 0, nil, "" and empty collections are false


class _Exec:
    def __init__(self, root: dict):
        self.root, self.vars = root, {"$": root}

    def value(self, toks: list[str], dot: Any) -> Any:
        tok = toks.pop(0)
        if tok == "(":
            v = self.call(toks, dot)
            assert toks.pop(0) == ")", "unbalanced parentheses"
            return v
        if tok.startswith('"'):
            return bytes(tok[1:-1], "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")
        if tok in ("true", "false"):
            return tok == "true"
        if re.fullmatch(r"-?\d+", tok):
            return int(tok)
        if tok.startswith("$"):
            name, _, field = tok.partition(".")
            base = self.vars[name]
            return self.field(base, field) if field else base
        if tok.startswith("."):
            return self.field(dot, tok[1:]) if tok != "." else dot
        raise ValueError(f"unsupported token {tok!r}")

    @staticmethod
    def field(obj: Any, path: str) -> Any:
        for name in path.split("."):
            obj = obj[name]  # a missing field is an error, as in Go
        return obj

    def call(self, toks: list[str], dot: Any) -> Any:
        fn = toks[0]
        if fn in ("eq", "ne", "and", "or", "not", "len"):
            toks.pop(0)
            args = []
            while toks and toks[0] != ")":
                args.append(self.value(toks, dot))
            if fn == "eq":
                return any(args[0] == b for b in args[1:])
            if fn == "ne":
                return args[0] != args[1]
            if fn == "not":
                return not _truthy(args[0])
            if fn == "len":
                return len(args[0])
            pick = next((a for a in args if not _truthy(a)), args[-1]) if fn == "and" else None
            return pick if fn == "and" else next((a for a in args if _truthy(a)), args[-1])
        return self.value(toks, dot)

    def expr(self, s: str, dot: Any) -> Any:
        toks = _TOKEN.findall(s)
        v = self.call(toks, dot)
        assert not toks, f"unparsed: {toks}"
        return v

    def run(self, nodes, dot) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "if":
                out.append(self.run(node[2] if _truthy(self.expr(node[1], dot)) else node[3], dot))
            elif node[0] == "range":
                m = re.fullmatch(r"(\$\w+)\s*,\s*(\$\w+)\s*:=\s*(.+)", node[1])
                items = self.expr(m.group(3) if m else node[1], dot)
                for i, item in enumerate(items):
                    if m:
                        self.vars[m.group(1)], self.vars[m.group(2)] = i, item
                    out.append(self.run(node[2], item))
                if not items:
                    out.append(self.run(node[3], dot))
            elif m := re.fullmatch(r"(\$\w+)\s*(:?=)\s*(.+)", node[1], re.S):
                if m.group(2) == "=" and m.group(1) not in self.vars:
                    raise NameError(f"undefined variable {m.group(1)}")
                self.vars[m.group(1)] = self.expr(m.group(3), dot)
            else:
                v = self.expr(node[1], dot)
                out.append({True: "true", False: "false"}.get(v, v) if isinstance(v, bool) else str(v))
        return "".join(out)


def render(
    template: str, messages: list[dict], system: str = "", prompt: str = "", response: str = ""
) -> str:
    """The text Ollama's template engine gives for `messages` (OpenAI-style role / content dicts)."""
    nodes, _ = _Parser(_lex(template)).block(())
    msgs = [{"Role": m["role"], "Content": m.get("content") or ""} for m in messages]
    root = {"System": system, "Prompt": prompt, "Response": response, "Messages": msgs}
    return _Exec(root).run(nodes, root)
