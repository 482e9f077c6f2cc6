"""The Chat tab: pick a run or model folder, load it, chat with streamed answers.

The displayed conversation (with "Thinking" bubbles when shown) and the conversation sent to the
model (answers only: reasoning is never fed back, the Qwen3 convention `lmforge chat` follows) are
kept apart: the Chatbot holds the first, a `gr.State` the second. Vision models take an image
uploaded beside the message (read from Gradio's upload folder only, see chat.upload_path).
"""

from __future__ import annotations

import gradio as gr

from lmforge.errors import LmforgeError
from lmforge.infer.args import GenerationArgs
from lmforge.webui.chat import ModelSlot, build_messages, find_model_dirs, image_message, stream_reply

GEN = GenerationArgs()


def _model_choices(runs_dir: str, slot: ModelSlot) -> list[str]:
    found = find_model_dirs(runs_dir)
    return ([slot.path] if slot.path and slot.path not in found else []) + found


def _display(user: str, reasoning: str, answer: str, show_thinking: bool) -> list[dict]:
    shown = [{"role": "user", "content": user}]
    if show_thinking and reasoning:
        shown.append({"role": "assistant", "content": reasoning, "metadata": {"title": "Thinking"}})
    if answer or not (show_thinking and reasoning):
        shown.append({"role": "assistant", "content": answer})
    return shown


def build_chat_tab(slot: ModelSlot, runs_dir: str):
    """The tab's components and events (call inside a `gr.Blocks` / `gr.Tab` context); returns
    (function, output) that rescans the runs for the model list, for app.load."""
    with gr.Row():
        choice = gr.Dropdown(
            choices=_model_choices(runs_dir, slot),
            value=slot.path,
            label=f"Run or model under {runs_dir}",
            allow_custom_value=True,
            scale=3,
            elem_id="chat-model",
        )
        path = gr.Textbox(label="…or a folder path", placeholder="out/sft-…/checkpoint-100", scale=3)
        refresh = gr.Button("Refresh list", scale=1)
        load = gr.Button("Load", variant="primary", scale=1, elem_id="chat-load")
    status = gr.Markdown(
        f"loaded {slot.path}" if slot.path else "no model yet: choose one and press Load",
        elem_id="chat-status",
    )
    chatbot = gr.Chatbot(label="Chat", height=420, buttons=["copy", "copy_all"], elem_id="chatbot")
    history = gr.State([])
    with gr.Row():
        message = gr.Textbox(placeholder="Message", show_label=False, scale=6, elem_id="chat-input")
        image = gr.Image(
            type="filepath",
            sources=["upload"],
            label="image (vision models)",
            height=96,
            scale=1,
            elem_id="chat-image",
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1, elem_id="chat-clear")
    with gr.Accordion("Generation settings", open=True):
        with gr.Row():
            temperature = gr.Slider(
                0, 2, GEN.temperature, step=0.05, label="temperature (0 = greedy)", elem_id="chat-temperature"
            )
            top_p = gr.Slider(0.05, 1, GEN.top_p, step=0.05, label="top_p")
            top_k = gr.Slider(0, 200, GEN.top_k, step=1, label="top_k (0 = off)")
        with gr.Row():
            max_new = gr.Slider(1, 4096, GEN.max_new_tokens, step=1, label="max_new_tokens")
            rep = gr.Slider(1.0, 2.0, GEN.repetition_penalty, step=0.05, label="repetition_penalty")
            turns = gr.Slider(0, 20, 0, step=1, label="history turns sent (0 = each question alone)")
        with gr.Row():
            system = gr.Textbox(label="system prompt (empty: the run's own)", scale=4)
            think = gr.Checkbox(GEN.enable_thinking, label="let the model think", scale=1)
            show = gr.Checkbox(
                GEN.show_thinking, label="show thinking", scale=1, elem_id="chat-show-thinking"
            )

    def do_load(chosen: str | None, typed: str):
        target = (typed or "").strip() or (chosen or "")
        try:
            text = slot.load(target)
        except LmforgeError as e:
            return f"error: {e}", gr.Dropdown()
        return text, gr.Dropdown(choices=_model_choices(runs_dir, slot), value=slot.path)

    def respond(text, img, shown, hist, temp, tp, tk, new, rp, n_turns, sys_prompt, thinking, show_thinking):
        text = (text or "").strip()
        if not text:
            yield gr.Textbox(), img, shown, hist, gr.Markdown()
            return
        if slot.engine is None:
            yield gr.Textbox(), img, shown, hist, "error: load a model first"
            return
        try:
            user = image_message(slot.engine, text, img)
        except LmforgeError as e:
            yield gr.Textbox(), img, shown, hist, f"error: {e}"
            return
        label = f"[image] {text}" if img else text
        gen = GenerationArgs(
            max_new_tokens=int(new),
            temperature=float(temp),
            top_p=float(tp),
            top_k=int(tk),
            repetition_penalty=float(rp),
            enable_thinking=bool(thinking),
            show_thinking=bool(show_thinking),
        )
        messages = build_messages(hist, user, (sys_prompt or "").strip() or None, int(n_turns))
        answer = ""
        try:
            for reasoning, answer in stream_reply(slot.engine, messages, gen):
                shown_now = shown + _display(label, reasoning, answer, gen.show_thinking)
                yield "", None, shown_now, hist, gr.Markdown()
        except LmforgeError as e:  # e.g. the conversation outgrew the context
            yield text, img, shown, hist, f"error: {e}"
            return
        turn = [user, {"role": "assistant", "content": answer}]
        yield "", None, gr.Chatbot(), hist + turn, f"loaded {slot.path}"

    gen_inputs = [temperature, top_p, top_k, max_new, rep, turns, system, think, show]
    outputs = [message, image, chatbot, history, status]
    load.click(do_load, [choice, path], [status, choice])

    def rescan():
        return gr.Dropdown(choices=_model_choices(runs_dir, slot))

    refresh.click(rescan, None, choice)
    # One generation at a time across both triggers and all tabs: CPUs gain nothing from overlap.
    queue = {"concurrency_limit": 1, "concurrency_id": "chat"}
    inputs = [message, image, chatbot, history, *gen_inputs]
    sent = send.click(respond, inputs, outputs, **queue)
    submitted = message.submit(respond, inputs, outputs, **queue)
    stop.click(None, None, None, cancels=[sent, submitted])
    clear.click(
        lambda: ([], [], "", None), None, [chatbot, history, message, image], cancels=[sent, submitted]
    )
    return rescan, choice
