"""Inference: one `Engine` (generate, stream, batch) used by chat, infer, serve, webui and eval; its
tokens come from the one decode loop (lmforge/decode/).

Submodules: `args` (GenerationArgs), `engine` (Engine, Completion), `chat` (terminal chat),
`batch` (file inference). Importing this package stays cheap: torch and transformers load only
when a model is.
"""

from lmforge.infer.args import GenerationArgs

__all__ = ["GenerationArgs"]
