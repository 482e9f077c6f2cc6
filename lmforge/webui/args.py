"""Flags of `lmforge webui` (kept apart from the Gradio code so `--help` never imports Gradio)."""

from __future__ import annotations

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
    share: bool = arg(False, "Open a public gradio.live tunnel (contacts Gradio's servers; off by default)")
    device: str | None = arg(None, "Device for chat models: cpu, cuda, cuda:N (default: GPU when present)")
    template: str | None = arg(
        None, "Chat template by name for chat models (default: each model's own; see `lmforge chat --help`)"
    )
