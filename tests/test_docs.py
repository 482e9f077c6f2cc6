"""The docs stay navigable and true: README size, the generated options page, links and flags.

- README.md stays a front page (≤ 15 KB); details live in docs/.
- docs/options.md is exactly what scripts/gen_options.py writes from the config fields' help.
- Every relative link in README.md and docs/*.md names an existing file (and heading, when it has
  an anchor).
- Every `--flag` of an `lmforge ...` command in the code blocks of README.md and docs/*.md is an
  option (or alias) of that command.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_LIMIT = 15 * 1024


@cache
def gen_options():
    spec = importlib.util.spec_from_file_location("gen_options", ROOT / "scripts" / "gen_options.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose_lines(text: str) -> list[str]:
    """Lines outside fenced code blocks."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            out.append(line)
    return out


def _code_blocks(text: str) -> list[str]:
    blocks, current, fence = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if fence:
                blocks.append("\n".join(current))
                current = []
            fence = not fence
            continue
        if fence:
            current.append(line)
    return blocks


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose_lines(page.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(page: Path) -> list[str]:
    text = "\n".join(_prose_lines(page.read_text(encoding="utf-8")))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_is_a_front_page():
    size = README.stat().st_size
    assert size <= README_LIMIT, (
        f"README.md is {size} bytes; keep it ≤ {README_LIMIT} (move details to docs/)"
    )


def test_options_page_is_generated_and_current():
    expected = gen_options().render()
    current = (DOCS / "options.md").read_text(encoding="utf-8")
    assert current == expected, f"docs/options.md is out of date; run: {gen_options().REGENERATE}"


def test_modules_page_is_generated_and_current():
    """docs/modules.md (every module and its docstring's first sentence) matches the code."""
    spec = importlib.util.spec_from_file_location("gen_modules", ROOT / "scripts" / "gen_modules.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    current = (DOCS / "modules.md").read_text(encoding="utf-8")
    assert current == mod.render(), f"docs/modules.md is out of date; run: {mod.REGENERATE}"
    assert "(no docstring)" not in current, "every module starts with a docstring (STYLE.md)"


def test_options_page_lists_every_group_field():
    from lmforge.config.schema import DataArgs

    text = (DOCS / "options.md").read_text(encoding="utf-8")
    for name in ("dataset", "val_size", "max_length", "streaming"):
        assert f"| `--{name}`" in text
    assert "(`--data_path`" in text  # aliases listed with their key
    assert len(DataArgs.__dataclass_fields__) >= 20


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    bad = []
    for link in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            bad.append(f"{link}: no file {path.relative_to(ROOT) if ROOT in path.parents else path}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            bad.append(f"{link}: no heading #{anchor} in {path.name}")
    assert not bad, f"{page.name}: " + "; ".join(bad)


def _commands(text: str) -> list[list[str]]:
    """The words after `lmforge` of every command line in the code blocks (continuations joined,
    comments and leading `VAR=value` words dropped, quoted multi-word values left out)."""
    out = []
    for block in _code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"^\s*#|\s#\s|\s#$|\s{2,}#", line)[0]
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words = words[1:]
            if words[:1] == ["lmforge"]:
                out.append([w for w in words[1:] if " " not in w])
    return out


@cache
def _specs_for(words: tuple[str, ...]) -> set[str]:
    from lmforge.config.loader import hf_training_specs, specs_of

    call = gen_options()._record_help(list(words))
    if call is None:
        return set()
    keys = {k for g in call.groups for k in specs_of(g, g.__name__)}
    if call.include_hf:
        keys |= set(hf_training_specs())
    return keys


def _command_keys(words: list[str]) -> tuple[str, set[str]]:
    """(the command as typed, the option keys it accepts) for the words after `lmforge`."""
    from lmforge import cli
    from lmforge.config.minimind import STAGE_ALIASES
    from lmforge.stages import STAGES

    stages = {s.replace("_", "-") for s in (*STAGES, *STAGE_ALIASES)}
    if words[:1] == ["train"]:
        stage = words[1] if len(words) > 1 else ""
        if stage.endswith((".yaml", ".yml", ".json")):  # the stage is the file's `stage:`
            return "train CONFIG", set()
        assert stage.replace("_", "-") in stages, f"`lmforge train` without a known stage: {words}"
        return f"train {stage}", _specs_for(("train", stage))
    if words[:2] == ["data", "convert"]:
        named = [w.split("=", 1)[-1] for w in words if w.startswith("--stage=")]
        named += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--stage"]
        stage = next((w for w in [*words[2:3], *named] if w.replace("_", "-") in stages), "sft")
        return "data convert", _specs_for(("train", stage)) | {"output", "stage"}
    for n in (2, 1):
        if tuple(words[:n]) in cli.COMMANDS:
            return " ".join(words[:n]), _specs_for(tuple(words[:n]))
    raise AssertionError(f"an unknown command: lmforge {' '.join(words)}")


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_flags_exist(page):
    from lmforge.config.loader import canonical_key
    from lmforge.teacher.args import normalize_argv  # generate's --teacher_model → --model

    bad = []
    for words in _commands(page.read_text(encoding="utf-8")):
        words = normalize_argv(words) if words[:1] == ["generate"] else words
        command, keys = _command_keys(words)
        if not keys:
            continue
        specs = dict.fromkeys(keys)
        for word in words:
            if not word.startswith("--"):
                continue
            name = word[2:].split("=", 1)[0].replace("-", "_")
            if name != "help" and canonical_key(name, specs)[0] not in keys:  # type: ignore[arg-type]
                bad.append(f"lmforge {command}: --{name}")
    assert not bad, f"{page.name}: flags the parser does not have: " + ", ".join(sorted(set(bad)))
