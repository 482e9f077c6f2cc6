"""Flags of `lmforge webui` (kept apart from the Gradio code so `--help` never imports Gradio)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from lmforge.config.fields import arg


@dataclass
class WebUIArgs:
    host: str = arg("127.0.0.1", "Address to bind; 0.0.0.0 exposes the UI to your network")
    port: int = arg(7860, "TCP port to serve on")
    model: str | None = arg(None, "Model folder, run folder or checkpoint to load in the Chat tab at start")
    runs_dir: str = arg(
        "out", "Folder scanned for run folders (Chat tab list); new runs without --output_dir go here"
    )
    share: bool = arg(
        False, "Open a public gradio.live tunnel (contacts Gradio's servers; needs --auth or --api_key)"
    )
    device: str | None = arg(None, "Device for chat models: cpu, cuda, cuda:N (default: GPU when present)")
    auth: str | None = arg(
        None, "Require a login USER:PASS (default: $LMFORGE_WEBUI_AUTH; none on 127.0.0.1)"
    )
    api_key: str | None = arg(
        None, "Require a login whose password is this token, any user name (default: $LMFORGE_WEBUI_API_KEY)"
    )
    data_roots: str | None = arg(
        None,
        "Comma-separated folders the forms may read models and datasets from, besides --runs_dir "
        "(default: the working folder)",
    )
    allow_remote_code: bool = arg(
        False, "Let a training form set trust_remote_code (runs Python code shipped in a model folder)"
    )

    def login(self) -> tuple[tuple[str, str] | None, str | None]:
        """(USER, PASS) and the token, from the flags or else the environment."""
        from lmforge.webui.guard import parse_auth

        auth = parse_auth(self.auth or os.environ.get("LMFORGE_WEBUI_AUTH"))
        return auth, self.api_key or os.environ.get("LMFORGE_WEBUI_API_KEY") or None

    template: str | None = arg(
        None, "Chat template by name for chat models (default: each model's own; see `lmforge chat --help`)"
    )
