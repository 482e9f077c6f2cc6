"""`lmforge` command line: the entry point (`main`), the dispatch of command words to handlers
(`cli_common.COMMANDS`; handlers in `cli_data` and `cli_run`) and `lmforge pipeline`.

User mistakes surface as `LmforgeError` and are printed as one line (exit status 2), never as a
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from lmforge import cli_data, cli_run, runtime
from lmforge.cli_common import COMMANDS, print_help, usage, wants_help
from lmforge.cli_run import EVAL_DEFAULTS  # noqa: F401  (importable from here: tests, docs)


def cmd_pipeline(argv: list[str]) -> int:
    from lmforge.commands import PipelineArgs
    from lmforge.config.loader import resolve

    if wants_help(argv):
        return print_help("lmforge pipeline FILE.yaml", COMMANDS[("pipeline",)][0], [PipelineArgs])
    cfg = resolve([PipelineArgs], argv, yaml_positional=False)
    from lmforge.errors import LmforgeError
    from lmforge.pipeline_file import run_pipeline_file

    if len(cfg.positionals) != 1:
        raise LmforgeError("pipeline: give exactly one pipeline YAML file")
    return run_pipeline_file(cfg.positionals[0], dry_run=cfg["dry_run"])


_HANDLER_MODULES = {"cli": sys.modules[__name__], "cli_data": cli_data, "cli_run": cli_run}


# --- entry point -------------------------------------------------------------------------------
def find_command(argv: list[str]) -> tuple[tuple[str, ...] | None, list[str]]:
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in COMMANDS:
            return words, argv[n:]
    return None, argv


def dispatch(argv: list[str]) -> int:
    from lmforge.swift import translate

    words, rest = find_command(translate(argv))  # ms-swift's spellings (lmforge/swift.py)
    if words is None:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(usage())
            return 0
        if argv[0] in ("--version", "-V"):
            from lmforge import __version__

            print(f"lmforge {__version__}")
            return 0
        groups = sorted({w[0] for w in COMMANDS if len(w) == 2 and w[0] == argv[0]})
        if groups:
            subs = [w[1] for w in COMMANDS if w[0] == argv[0]]
            print(f"usage: lmforge {argv[0]} {{{','.join(subs)}}} ...", file=sys.stderr)
            return 2
        import difflib

        names = [" ".join(w) for w in COMMANDS]
        near = difflib.get_close_matches(argv[0], [w[0] for w in COMMANDS], n=1)
        hint = f" Did you mean `lmforge {near[0]}`?" if near else ""
        print(f"lmforge: unknown command {argv[0]!r}.{hint} Commands: {', '.join(names)}", file=sys.stderr)
        return 2
    module, name = COMMANDS[words][1].split(".")
    handler: Callable[[list[str]], int] = getattr(_HANDLER_MODULES[module], name)
    return handler(rest)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    runtime.setup()
    from lmforge.errors import LmforgeError

    try:
        code = dispatch(argv)
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lmforge ... --help | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
