"""Build and launch the Gradio app: a Chat tab and a Training tab.

Local by default and quiet on the network: binds 127.0.0.1, Gradio's analytics and version
check are off, the theme uses system fonts (no Google Fonts request from the browser), server-side
rendering (a Node process) and the MCP server are off; nothing leaves the machine unless
`--share true` opens Gradio's public tunnel. What a browser may do is limited by guard.py: runs
only inside --runs_dir, files only inside the allowed roots, no model-folder code, and a login
(--auth / --api_key) before the UI may be reached from other machines.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from lmforge.errors import LmforgeError
from lmforge.webui.args import WebUIArgs
from lmforge.webui.guard import Access, exposure, login_check

TITLE = "lmforge"


def _quiet_gradio_env() -> None:
    """Set before Gradio is imported: it reads these at import time."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_SSR_MODE", "False")
    os.environ.setdefault("GRADIO_MCP_SERVER", "False")


def _import_gradio():
    _quiet_gradio_env()
    try:
        import gradio as gr
    except ImportError:
        raise LmforgeError('the web UI needs Gradio: pip install "lmforge[webui]"') from None
    return gr


def build_app(args: WebUIArgs, access: Access | None = None):
    """(Blocks app, model slot, job board); the model named by `args.model` is loaded first."""
    from lmforge.webui.chat import ModelSlot
    from lmforge.webui.jobs import JobBoard

    access = access or access_of(args)
    slot = ModelSlot(device=args.device, access=access, template=args.template)
    board = JobBoard()
    if args.model:  # a bad --model fails before the slow part; the operator's choice, not checked
        slot.load(args.model, checked=False)
    gr = _import_gradio()
    from lmforge.webui.chat_tab import build_chat_tab
    from lmforge.webui.train_tab import build_train_tab

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}: chat with a model, or train one")
        with gr.Tab("Chat", id="chat"):
            rescan, model_list = build_chat_tab(slot, args.runs_dir)
        with gr.Tab("Training", id="training", elem_id="tab-training"):
            refresh, outputs = build_train_tab(board, args.runs_dir, access)
        demo.load(rescan, None, model_list)  # runs finished since the server started
        demo.load(refresh, None, outputs)  # a reopened page picks up a run that is still going
    return demo, slot, board


def access_of(args: WebUIArgs) -> Access:
    return Access.create(args.runs_dir, args.data_roots, args.allow_remote_code)


def _theme(gr):
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "monospace"]
    return gr.themes.Default(font=system, font_mono=mono)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def launch(args: WebUIArgs) -> int:
    """Serve until interrupted; a training run still going is stopped on the way out."""
    if not 0 < args.port < 65536:
        raise LmforgeError(f"--port {args.port}: expected 1-65535")
    auth, api_key = args.login()
    access = access_of(args)
    warning = exposure(args.host, args.share, login_check(auth, api_key) is not None, access.roots)
    demo, _, board = build_app(args, access)
    gr = _import_gradio()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own startup probes
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` shuts down like Ctrl+C: no orphan run
    try:
        demo.queue().launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            inbrowser=False,
            ssr_mode=False,
            mcp_server=False,
            quiet=True,
            show_error=True,
            theme=_theme(gr),
            footer_links=[],
            prevent_thread_lock=True,
            auth=login_check(auth, api_key),
            auth_message="lmforge web UI: log in with --auth USER:PASS, or any user and the --api_key token",
        )
        login = "login required" if auth or api_key else "no login"
        print(f"lmforge webui on http://{args.host}:{args.port} ({login}; Ctrl+C to quit)", flush=True)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        demo.block_thread()  # returns on Ctrl+C / SIGTERM, after closing the server
    except OSError as e:  # port taken, address not available
        raise LmforgeError(f"cannot serve on {args.host}:{args.port}: {e}") from None
    finally:
        board.shutdown()
    return 0
