"""The Chat tab's logic, without Gradio: which folders hold a model, the loaded model, and one
streamed reply split into its `<think>` reasoning and its answer (the same split as `lmforge chat`).

Vision models take an uploaded image with a message; the image is read only from Gradio's upload
folder (`upload_path`), never from a path the browser names elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.infer.args import GenerationArgs
from lmforge.infer.engine import ChatDeltas, Engine
from lmforge.webui.guard import Access

MAX_DEPTH = 4  # out/demo/sft is depth 2; deeper trees are not run folders


def _holds_model(path: Path) -> bool:
    if (path / "adapter_config.json").is_file():
        return True
    if not (path / "config.json").is_file():
        return False
    return any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))


def find_model_dirs(runs_dir: str | Path) -> list[str]:
    """Folders under `runs_dir` (itself included) that hold a model or an adapter, newest first.
    Checkpoints are left out (type their path to load one); model folders are not searched inside."""
    root = Path(runs_dir)
    found: list[Path] = []

    def walk(path: Path, depth: int) -> None:
        if _holds_model(path):
            found.append(path)
            return
        if depth >= MAX_DEPTH:
            return
        try:
            children = sorted(p for p in path.iterdir() if p.is_dir())
        except OSError:
            return
        for child in children:
            if not child.name.startswith((".", "checkpoint-")):
                walk(child, depth + 1)

    if root.is_dir():
        walk(root, 0)
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(p) for p in found]


class ModelSlot:
    """The one loaded model, shared by every browser tab (a local UI; one model fits in memory)."""

    def __init__(self, device: str | None = None, access: Access | None = None, template: str | None = None):
        self.device, self.template = device, template
        self.access = access  # the folders a browser may load from (None: anywhere)
        self.engine: Engine | None = None
        self.path: str | None = None

    def load(self, path: str, *, checked: bool = True) -> str:
        """Load `path` (replacing the current model); returns a one-line description. `checked`:
        refuse a path outside the allowed folders (False for the operator's own --model)."""
        path = (path or "").strip()
        if not path:
            raise LmforgeError("choose a run from the list or type a model folder")
        if checked and self.access is not None:
            from lmforge.webui.guard import check_model

            check_model(path, self.access)
        try:
            engine = Engine.from_path(path, device=self.device, template=self.template)
        except LmforgeError:
            raise
        except Exception as e:  # a broken folder: a library error, said in one line
            detail = " ".join(str(e).split())[:300]
            raise LmforgeError(f"{path}: cannot load a model ({type(e).__name__}: {detail})") from None
        from lmforge.models.presets import count_parameters

        self.engine, self.path = engine, path
        return f"loaded {path} ({count_parameters(engine.model) / 1e6:.2f}M parameters, {engine.device})"


def build_messages(
    history: list[dict], user: str | dict, system: str | None, history_turns: int
) -> list[dict]:
    """The conversation sent to the model: system prompt, the last `history_turns` turns, `user`
    (a text, or a user message that may carry "images")."""
    kept = history[-2 * history_turns :] if history_turns > 0 else []
    head = [{"role": "system", "content": system}] if system else []
    return head + kept + [user if isinstance(user, dict) else {"role": "user", "content": user}]


def split_images(messages: list[dict]) -> tuple[list[dict], list[str]]:
    """(messages without their "images" keys, the images in order) for `VisionEngine.stream`."""
    images = [im for m in messages for im in m.get("images", ())]
    return [{k: v for k, v in m.items() if k != "images"} for m in messages], images


def upload_path(path: str) -> str:
    """`path` when it lies in Gradio's upload folder (symlinks and `..` resolved), else an error."""
    from gradio.utils import get_upload_folder

    root = Path(get_upload_folder()).resolve()
    real = Path(path).resolve()
    if not real.is_relative_to(root):
        raise LmforgeError(f"image {path}: not an upload (images are read only from {root})")
    return str(real)


def image_message(engine: Engine, text: str, image: str | None) -> dict:
    """The user message for `text` with an uploaded `image` (placeholder first), checked."""
    if not image:
        return {"role": "user", "content": text}
    if not hasattr(engine, "encode_vision"):
        raise LmforgeError("this model takes no images (not a vision-language model)")
    from lmforge.models.vision import IMAGE_PLACEHOLDER

    path = upload_path(image)
    engine.load_images([path])  # a bad file: one line now, not mid-stream
    return {"role": "user", "content": IMAGE_PLACEHOLDER + text, "images": [path]}


def stream_reply(engine: Engine, messages: list[dict], gen: GenerationArgs) -> Iterator[tuple[str, str]]:
    """Yield (reasoning so far, answer so far) while the model streams; the last pair is the
    Engine's own final split (`Completion.reasoning_content`, `Completion.text`). User messages
    may carry "images" (vision models)."""
    deltas = ChatDeltas()  # the split serve and chat make
    parts = {"reasoning_content": "", "content": ""}
    messages, images = split_images(messages)
    stream = engine.stream(messages, gen, images=images) if images else engine.stream(messages, gen)
    try:
        for piece in stream:
            for delta in deltas.feed(piece):
                for kind, text in delta.items():
                    parts[kind] += text
            yield parts["reasoning_content"], parts["content"]
    finally:
        stream.close()  # the browser went away or pressed Stop: end the generation thread
    done = stream.completion
    if done is not None:
        yield (done.reasoning_content or "").strip(), done.text
