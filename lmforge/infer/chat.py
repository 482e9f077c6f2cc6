"""`lmforge chat`: a streaming terminal chat, or one answer with `--prompt` (MiniMind's eval_llm.py).

REPL commands: `/reset` clears the history, `/system TEXT` sets the system prompt (`/system` alone
clears it), `/image PATH` attaches an image to the next user turn (vision models; a bad file is a
one-line error and the chat goes on), `/exit` (or `/quit`, or end of input) quits. `--historys N` keeps the last N
user/assistant turns in the prompt; 0 (MiniMind's default) answers every question on its own.
Thinking (`<think>...</think>`) is shown dimmed on a terminal, or hidden with `--show_thinking false`;
it is never fed back into the history (Qwen3 convention).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from lmforge.errors import LmforgeError
from lmforge.infer.args import EngineArgs, GenerationArgs

if TYPE_CHECKING:
    from lmforge.infer.engine import Engine

DIM, RESET = "\033[2m", "\033[0m"
HELP = (
    "commands: /reset (clear history), /system TEXT (set system prompt), "
    "/image PATH (attach an image to the next message), /exit (quit)"
)


@dataclass
class ChatArgs(EngineArgs):
    """Which model to talk to and how the conversation is kept."""

    historys: int = field(
        default=0,
        metadata={
            "help": "Previous user/assistant turns kept in the prompt (0 = every question stands alone)."
        },
    )
    system: str | None = field(default=None, metadata={"help": "System prompt (default: the run's, if any)."})
    prompt: str | None = field(default=None, metadata={"help": "Answer this one prompt and exit (no REPL)."})
    image: str | None = field(
        default=None,
        metadata={
            "help": "Image file(s) for --prompt, comma separated (vision models; in the REPL: /image)."
        },
    )
    stream: bool = field(default=True, metadata={"help": "Print tokens as they are generated."})
    show_speed: bool = field(
        default=False, metadata={"help": "After each answer print tokens and tokens/s (stderr)."}
    )


def _template_name(value: str | None) -> str | None:
    """`--template`: a chat template's name; eval's prompt modes (auto / chat / plain) name none."""
    return None if value in (None, "auto", "chat", "plain") else value


def load_engine(args: ChatArgs) -> Engine:
    """The `Engine` named by the model flags of `args` (also used by `infer`)."""
    from lmforge.infer.engine import Engine

    model, save_dir = args.model or args.weight, args.save_dir
    if args.model and args.weight:
        # MiniMind's eval script: --load_from names where weights live, --weight which ones.
        from pathlib import Path

        if Path(args.model).is_dir() and not Path(args.model, "config.json").exists():
            model, save_dir = args.weight, args.model
        elif args.model == "model" and not Path(args.model).exists():  # its default: weights by name
            model = args.weight
    if not model:
        raise LmforgeError("no model given: pass --model PATH (or --load_from / --weight NAME)")
    return Engine.from_path(
        model,
        device=args.device,
        dtype=args.dtype,
        lora_weight=args.lora_weight,
        inference_rope_scaling=args.inference_rope_scaling,
        attn_implementation=args.attn_implementation,
        save_dir=save_dir,
        hidden_size=args.hidden_size,
        num_hidden_layers=getattr(args, "num_hidden_layers", None),
        use_moe=args.use_moe,
        template=_template_name(getattr(args, "template", None)),
    )


class _Printer:
    """Writes streamed pieces, dimming or hiding the reasoning part (split by infer/text.py's
    `ChatDeltas`, as serve splits it)."""

    def __init__(self, out: TextIO, show_thinking: bool):
        from lmforge.infer.text import ChatDeltas

        self.out, self.show = out, show_thinking
        self.dim = bool(getattr(out, "isatty", lambda: False)())
        self.deltas = ChatDeltas()
        self.seen_content = self.seen_reasoning = False

    def write(self, piece: str, final: bool = False) -> None:
        for delta in self.deltas.feed(piece, final=final):
            if "reasoning_content" in delta:
                if not self.show:
                    continue
                text = delta["reasoning_content"]
                self.seen_reasoning = True
                self.out.write(f"{DIM}{text}{RESET}" if self.dim else text)
            else:
                text = delta["content"]
                if not self.seen_content and self.seen_reasoning:
                    self.out.write("\n\n")  # a blank line between the reasoning and the answer
                self.seen_content = True
                self.out.write(text)
            self.out.flush()


def answer(
    engine: Engine,
    messages: list[dict],
    gen: GenerationArgs,
    args: ChatArgs,
    out: TextIO,
    images: list | None = None,
) -> str:
    """Print one answer to `out` (streamed or whole); returns its content for the history.
    `images`: the conversation's images, in `<image>` placeholder order (vision models)."""
    started = time.perf_counter()
    printer = _Printer(out, gen.show_thinking)
    media = {"images": images} if images else {}
    if args.stream:
        stream = engine.stream(messages, gen, **media)
        try:
            for piece in stream:
                printer.write(piece)
        except KeyboardInterrupt:
            stream.close()
            out.write("\n[interrupted]\n")
            return ""
        printer.write("", final=True)
        done = stream.completion
    else:
        done = engine.chat(messages, gen, **media)
        printer.write(done.raw_text, final=True)
    out.write("\n")
    out.flush()
    if args.show_speed and done is not None:
        secs = max(time.perf_counter() - started, 1e-9)
        print(
            f"[{done.completion_tokens} tokens, {done.completion_tokens / secs:.1f} tokens/s, "
            f"finish: {done.finish_reason}]",
            file=sys.stderr,
        )
    return done.text if done is not None else ""


def load_attachment(engine: Engine, path: str):
    """The image at `path` for a vision engine (one-line `LmforgeError` otherwise)."""
    if not hasattr(engine, "encode_vision"):
        raise LmforgeError("this model takes no images (not a vision-language model)")
    from pathlib import Path

    return engine.load_images([str(Path(path).expanduser())])[0]


def _attach(engine: Engine, path: str, pending: list) -> str:
    """`/image PATH`: read the image now (so a bad file is reported at once) and keep it for the
    next user turn; returns the line to show."""
    if not path:
        return "error: /image needs a path: /image PATH"
    try:
        pending.append(load_attachment(engine, path))
    except LmforgeError as e:
        return f"error: /image: {e}"
    return f"[image {len(pending)} attached to the next message: {path}]"


def run_chat(
    chat_args: ChatArgs,
    gen_args: GenerationArgs,
    *,
    engine: Engine | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run the chat; returns the exit status. `engine` skips loading (tests, the web UI)."""
    stdin, out = stdin or sys.stdin, stdout or sys.stdout
    if chat_args.historys < 0:
        raise LmforgeError(f"--historys {chat_args.historys}: must be 0 or more")
    engine = engine or load_engine(chat_args)
    system = chat_args.system if chat_args.system is not None else engine.system

    def build(history: list[dict], user: dict) -> tuple[list[dict], list]:
        """The prompt's messages and their images (user turns keep theirs under "images")."""
        kept = history[-2 * chat_args.historys :] if chat_args.historys else []
        head = [{"role": "system", "content": system}] if system else []
        turns = [*kept, user]
        images = [im for m in turns for im in m.get("images", ())]
        return head + [{k: v for k, v in m.items() if k != "images"} for m in turns], images

    if chat_args.image and chat_args.prompt is None:
        raise LmforgeError("--image goes with --prompt; in the chat itself attach images with /image PATH")
    if chat_args.prompt is not None:
        paths = [p.strip() for p in (chat_args.image or "").split(",") if p.strip()]
        images = [load_attachment(engine, p) for p in paths]
        user = {"role": "user", "content": chat_args.prompt}
        if images:
            from lmforge.models.vision import IMAGE_PLACEHOLDER

            if IMAGE_PLACEHOLDER not in chat_args.prompt:
                user["content"] = IMAGE_PLACEHOLDER * len(images) + chat_args.prompt
        answer(engine, build([], user)[0], gen_args, chat_args, out, images)
        return 0
    interactive = bool(getattr(stdin, "isatty", lambda: False)())
    if interactive:
        out.write(f"lmforge chat with {engine.name}. {HELP}\n")
    history: list[dict] = []
    pending: list = []  # images attached with /image, for the next user turn
    while True:
        if interactive:
            out.write("> ")
            out.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            break
        if not line:  # EOF
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, rest = line.partition(" ")
            if cmd in ("/exit", "/quit"):
                break
            if cmd == "/reset":
                history.clear()
                out.write("[history cleared]\n")
            elif cmd == "/image":
                out.write(_attach(engine, rest.strip(), pending) + "\n")
            elif cmd == "/system":
                system = rest.strip() or None
                history.clear()
                out.write(f"[system prompt {'set' if system else 'cleared'}; history cleared]\n")
            else:
                out.write(f"[unknown command {cmd}] {HELP}\n")
            out.flush()
            continue
        user: dict = {"role": "user", "content": line}
        if pending:
            from lmforge.models.vision import IMAGE_PLACEHOLDER

            user = {"role": "user", "content": IMAGE_PLACEHOLDER * len(pending) + line, "images": pending}
        try:
            messages, images = build(history, user)
            reply = answer(engine, messages, gen_args, chat_args, out, images)
        except LmforgeError as e:  # e.g. the conversation outgrew the context: say so, keep going
            out.write(f"error: {e}\n")
            continue
        finally:
            pending = []
        history += [user, {"role": "assistant", "content": reply}]
    if interactive:
        out.write("\n")
    return 0
