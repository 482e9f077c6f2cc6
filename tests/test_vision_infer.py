"""Inference with vision LLMs on the tiny Qwen2-VL of `lmforge init --vision` (random weights: the
answers are noise, so every check compares with plain transformers or with the engine itself).

Engine greedy output equals `Qwen2VLForConditionalGeneration.generate` on the processor's inputs,
batched equals one by one; `chat /image` through the CLI; `infer` with an image column; `serve`
through the real `openai` client (a server subprocess with the media flags, plus an in-process app
for the default policy) with its guards: data URLs, bad base64, http URLs, local paths inside /
outside `--allowed_local_media_path`, `--limit_mm_per_prompt`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")

from PIL import Image  # noqa: E402

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.infer.args import GenerationArgs  # noqa: E402

GREEDY = GenerationArgs(temperature=0, max_new_tokens=8)
QUESTION = "what colour is this?"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vl(tmp_path_factory):
    """(model folder, image folder): the tiny vision model and a red 56x56, a blue 112x84 PNG and a
    file that is not an image."""
    from lmforge.models.vision import build_tiny_vision_model

    root = tmp_path_factory.mktemp("vl")
    model_dir = build_tiny_vision_model(str(root / "model"))
    images = root / "data" / "imgs"
    images.mkdir(parents=True)
    Image.new("RGB", (56, 56), (255, 0, 0)).save(images / "red.png")
    Image.new("RGB", (112, 84), (0, 0, 255)).save(images / "blue.png")
    (images / "bad.png").write_text("not an image")
    return model_dir, images


@pytest.fixture(scope="module")
def engine(vl):
    from lmforge.infer.engine import Engine

    return Engine.from_path(vl[0], device="cpu")


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------------------------
# Engine


def test_engine_greedy_equals_plain_transformers(vl, engine):
    from transformers import Qwen2VLForConditionalGeneration

    from lmforge.infer.vision import VisionEngine
    from lmforge.models.vision import load_processor

    assert isinstance(engine, VisionEngine)
    red = Image.open(vl[1] / "red.png").convert("RGB")
    proc = load_processor(vl[0])
    model = Qwen2VLForConditionalGeneration.from_pretrained(vl[0]).eval()
    text = proc.tokenizer.apply_chat_template(
        user(f"<|vision_start|><|image_pad|><|vision_end|>{QUESTION}"),
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = proc(text=[text], images=[red], return_tensors="pt")
    with torch.inference_mode():
        ref = model.generate(**inputs, do_sample=False, max_new_tokens=GREEDY.max_new_tokens)
    ref = ref[0, inputs["input_ids"].shape[1] :].tolist()

    prompt = engine.encode_vision(user(f"<image>{QUESTION}"), [str(vl[1] / "red.png")], GREEDY)
    assert prompt.ids == inputs["input_ids"][0].tolist()  # 4 image tokens for a 56x56 image
    assert prompt.ids.count(engine.image_token_id) == 4
    done = engine.chat(user(f"<image>{QUESTION}"), GREEDY, images=[red])
    assert done.token_ids == ref[: len(done.token_ids)] and done.token_ids
    assert done.finish_reason == "stop" or done.token_ids == ref
    # the image matters: another image gives another answer
    blue = engine.chat(user(f"<image>{QUESTION}"), GREEDY, images=[str(vl[1] / "blue.png")])
    assert blue.token_ids != done.token_ids
    # OpenAI content parts are the same prompt
    parts = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(vl[1] / "red.png")}},
                                          {"type": "text", "text": QUESTION}]}]  # fmt: skip
    assert engine.encode_vision(parts, None, GREEDY).ids == prompt.ids
    # no placeholder: the image goes before the first user turn's text
    assert engine.encode_vision(user(QUESTION), [red], GREEDY).ids == prompt.ids
    streamed = "".join(engine.stream(user(f"<image>{QUESTION}"), GREEDY, images=[red]))
    assert streamed == done.raw_text


def test_batched_equals_one_by_one(vl, engine):
    red, blue = str(vl[1] / "red.png"), str(vl[1] / "blue.png")
    rows = [
        (user(f"<image>{QUESTION}"), [red]),
        (user("compare <image> with <image>, please"), [red, blue]),
        (user("no image at all"), []),
        (user(f"<image>{QUESTION}"), [blue]),
    ]
    prompts = [engine.encode_vision(m, im, GREEDY) for m, im in rows]
    together = engine.generate_vision(prompts, GREEDY, batch_size=4)
    alone = [engine.generate_vision([p], GREEDY, batch_size=1)[0] for p in prompts]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert len({tuple(c.token_ids) for c in alone}) == 4
    # lazy prompts (infer): image inputs computed per batch from the paths, same answers
    lazy = [engine.encode_vision(m, im, GREEDY, lazy=True) for m, im in rows]
    assert [p.pixels for p in lazy] == [None, None, {}, None] and [p.ids for p in lazy] == [
        p.ids for p in prompts
    ]
    assert [c.token_ids for c in engine.generate_vision(lazy, GREEDY, batch_size=4)] == [
        c.token_ids for c in alone
    ]


def test_a_runs_image_max_pixels_applies_at_inference(vl, tmp_path):
    """A run folder trained with --image_max_pixels resizes inference images the same way."""
    import shutil

    from lmforge.infer.engine import Engine

    run = tmp_path / "run"
    shutil.copytree(vl[0], run)
    (run / "lmforge_args.yaml").write_text("image_max_pixels: 3136\n")  # 56*56
    small = Engine.from_path(str(run), device="cpu")
    blue = str(vl[1] / "blue.png")  # 112x84: 12 image tokens as it is, 4 once within 56*56 pixels
    assert small.encode_vision(user("<image>"), [blue], GREEDY).ids.count(small.image_token_id) == 4
    assert (
        small.encode_vision(user("<image>"), [blue], GREEDY, lazy=True).ids.count(small.image_token_id) == 4
    )


def test_placeholders_and_images_must_agree(vl, engine):
    red = str(vl[1] / "red.png")
    with pytest.raises(LmforgeError, match=r"2 <image> placeholder\(s\) but 1 image"):
        engine.encode_vision(user("<image> and <image>"), [red], GREEDY)
    with pytest.raises(LmforgeError, match=r"1 image token\(s\) .* but 0 image"):  # typed image token
        engine.encode_vision(user("<|image_pad|> hi"), [], GREEDY)
    with pytest.raises(LmforgeError, match="bad.png: not a readable image"):
        engine.encode_vision(user("<image>"), [str(vl[1] / "bad.png")], GREEDY)


def test_expand_image_tokens_masks_labels(engine):
    from lmforge.models.vision import expand_image_tokens

    tid = engine.image_token_id
    ids, labels = expand_image_tokens(engine.processor, [5, tid, 6, tid], [2, 3], [5, 9, 6, 9])
    assert ids == [5, tid, tid, 6, tid, tid, tid]
    assert labels == [5, -100, -100, 6, -100, -100, -100]


# ---------------------------------------------------------------------------------------------
# chat and infer


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_chat_image_command_through_the_cli(vl, engine):
    red, bad = vl[1] / "red.png", vl[1] / "bad.png"
    stdin = f"/image {red}\n{QUESTION}\n/image {bad}\n/image {vl[1] / 'missing.png'}\nhello\n"
    out = subprocess.run(
        [sys.executable, "-m", "lmforge", "chat", "--model", vl[0], "--temperature", "0", "--max_new_tokens", "8"],
        input=stdin, capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    want = engine.chat(user(f"<image>{QUESTION}"), GREEDY, images=[str(red)]).text
    assert lines[0].startswith("[image 1 attached")
    assert lines[1] == want.strip()
    assert (
        lines[2] == f"error: /image: image {bad}: not a readable image (cannot identify image file '{bad}')"
    )
    assert lines[3] == f"error: /image: image {vl[1] / 'missing.png'}: file not found"
    assert lines[4] == engine.chat(user("hello"), GREEDY).text.strip()  # the chat went on, without images


def test_chat_prompt_with_image_flag(vl, engine):
    from lmforge.infer.chat import ChatArgs, run_chat

    out = io.StringIO()
    args = ChatArgs(prompt=QUESTION, image=str(vl[1] / "red.png"), stream=False)
    run_chat(args, GREEDY, engine=engine, stdout=out)
    assert (
        out.getvalue().strip()
        == engine.chat(user(f"<image>{QUESTION}"), GREEDY, images=[str(vl[1] / "red.png")]).text.strip()
    )
    with pytest.raises(LmforgeError, match="bad.png: not a readable image"):
        run_chat(ChatArgs(prompt="hi", image=str(vl[1] / "bad.png")), GREEDY, engine=engine, stdout=out)


def test_infer_image_column(vl, engine, tmp_path):
    from lmforge.infer.batch import InferArgs, run_infer

    data = vl[1].parent
    rows = [
        {"messages": user(f"<image>{QUESTION}"), "images": ["imgs/red.png"]},
        {"prompt": QUESTION, "images": "imgs/blue.png"},
        {"prompt": "two: <image> <image>", "images": ["imgs/blue.png", str(vl[1] / "red.png")]},
        {"prompt": "none"},
    ]
    src = data / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_infer(
        InferArgs(input=str(src), output=str(tmp_path / "p.jsonl"), batch_size=3), GREEDY, engine=engine
    )
    got = [json.loads(line)["prediction"] for line in open(out)]
    red, blue = str(vl[1] / "red.png"), str(vl[1] / "blue.png")
    want = [
        engine.chat(user(f"<image>{QUESTION}"), GREEDY, images=[red]).text,
        engine.chat(user(QUESTION), GREEDY, images=[blue]).text,
        engine.chat(user("two: <image> <image>"), GREEDY, images=[blue, red]).text,
        engine.chat(user("none"), GREEDY).text,
    ]
    assert got == want
    # CSV with `--image_column`, a bad image in row 3 (line 3 of the file): one line naming both
    csv = data / "rows.csv"
    csv.write_text(f"user_prompt,picture\n{QUESTION},imgs/red.png\nhi,imgs/bad.png\n")
    args = InferArgs(input=str(csv), output=str(tmp_path / "p.csv"), image_column="picture")
    with pytest.raises(LmforgeError) as err:
        run_infer(args, GREEDY, engine=engine)
    msg = str(err.value)
    assert msg.startswith(f"{csv}:3: image {vl[1] / 'bad.png'}: not a readable image") and "\n" not in msg
    assert not (tmp_path / "p.csv").exists()
    # a text-only engine never drops a row's images silently
    from lmforge.infer.engine import Engine

    text_only = Engine(engine.model, engine.tokenizer)
    with pytest.raises(LmforgeError, match=r"rows.jsonl:1.*not a vision-language model"):
        run_infer(InferArgs(input=str(src), output=str(tmp_path / "t.jsonl")), GREEDY, engine=text_only)


# ---------------------------------------------------------------------------------------------
# serve


def data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def image_chat(url: str, text: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]  # fmt: skip


@pytest.fixture(scope="module")
def server(vl, tmp_path_factory):
    pytest.importorskip("fastapi")
    from tests.test_serve import start_server, stop_server

    log = tmp_path_factory.mktemp("vl_serve") / "serve.log"
    argv = [vl[0], "--served_model_name", "vl", "--temperature", "0", "--max_new_tokens", "8"]
    argv += ["--allowed_local_media_path", str(vl[1]), "--limit_mm_per_prompt", '{"image": 2}']
    proc, url = start_server(argv, log)
    yield url
    stop_server(proc)
    assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0, timeout=120)


def _status(call) -> tuple[int, str]:
    import openai

    try:
        call()
    except openai.APIStatusError as e:
        return e.status_code, e.body.get("message", "") if isinstance(e.body, dict) else str(e.body)
    return 200, ""


def ask(client, messages):
    return lambda: client.chat.completions.create(model="vl", messages=messages)


def test_serve_data_url_answer_equals_the_engine(vl, engine, client):
    red = vl[1] / "red.png"
    got = client.chat.completions.create(model="vl", messages=image_chat(data_url(red)))
    want = engine.chat(user(f"<image>{QUESTION}"), GREEDY, images=[str(red)])
    assert got.choices[0].message.content == want.text
    assert got.usage.prompt_tokens == len(
        engine.encode_vision(user(f"<image>{QUESTION}"), [str(red)], GREEDY).ids
    )
    stream = client.chat.completions.create(model="vl", messages=image_chat(data_url(red)), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want.text
    # a text-only request to the vision model still batches, with the same answer as the engine
    text = client.chat.completions.create(model="vl", messages=user("hello"))
    assert text.choices[0].message.content == engine.chat(user("hello"), GREEDY).text


def test_serve_local_paths_only_inside_the_allowed_folder(vl, engine, client, tmp_path):
    red = vl[1] / "red.png"
    want = engine.chat(user(f"<image>{QUESTION}"), GREEDY, images=[str(red)]).text
    for ref in (str(red), f"file://{red}", f"{vl[1]}/../imgs/red.png"):
        got = client.chat.completions.create(model="vl", messages=image_chat(ref))
        assert got.choices[0].message.content == want
    outside = tmp_path / "secret.png"
    Image.new("RGB", (56, 56)).save(outside)
    (vl[1] / "link.png").symlink_to(outside)
    escape = f"{vl[1]}/{os.path.relpath(outside, vl[1])}"  # .../imgs/../../../<tmp>/secret.png
    assert ".." in escape
    for ref in (str(outside), f"file://{outside}", escape, f"file://{escape}", str(vl[1] / "link.png")):
        code, msg = _status(ask(client, image_chat(ref)))
        assert code == 400 and "outside --allowed_local_media_path" in msg, ref


def test_serve_bad_images_and_urls_are_400(vl, client, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 5_000)).save(huge)  # 50M pixels, a few kB of PNG
    cases = {
        data_url(huge): "10000x5000 pixels, more than 40000000 allowed",
        "data:image/png;base64,@@not base64@@": "does not decode",
        "data:image/png;base64," + base64.b64encode(b"plain text").decode(): "not a readable image",
        "https://example.com/cat.png": "http(s) URLs are not fetched",
        "http://127.0.0.1:1/x.png": "http(s) URLs are not fetched",
        str(vl[1] / "bad.png"): "not a readable image",
        str(vl[1] / "missing.png"): "file not found",
    }
    for ref, expected in cases.items():
        code, msg = _status(ask(client, image_chat(ref)))
        assert code == 400 and expected in msg, (ref, code, msg)


def test_serve_limit_mm_per_prompt(vl, client):
    red = data_url(vl[1] / "red.png")
    two = [{"type": "image_url", "image_url": {"url": red}}] * 2
    ok = client.chat.completions.create(
        model="vl", messages=[{"role": "user", "content": [*two, {"type": "text", "text": "hi"}]}]
    )
    assert ok.choices[0].message.content is not None
    three = [{"role": "user", "content": [*two, {"type": "image_url", "image_url": {"url": red}}]}]
    code, msg = _status(ask(client, three))
    assert code == 400 and "3 images; at most 2" in msg
    code, msg = _status(
        lambda: client.chat.completions.create(model="vl", messages=image_chat(red), logprobs=True)
    )
    assert code == 400 and "logprobs is not supported for requests with images" in msg


def test_serve_default_policy_refuses_local_paths_and_text_models_refuse_images(vl, engine):
    """In process (the `openai` client over Starlette's TestClient): no --allowed_local_media_path."""
    openai = pytest.importorskip("openai")
    from starlette.testclient import TestClient

    from lmforge.decode.batch import Runner
    from lmforge.serve.app import create_app
    from lmforge.serve.protocol import ApiError
    from lmforge.serve.scheduler import Scheduler
    from lmforge.serve.service import Service
    from lmforge.serve.vision import LOCAL_OFF, MediaPolicy, request_images

    sched = Scheduler(Runner(engine.model, engine.pad_id), engine.decode, engine.eos_ids)
    service = Service(engine, sched, {"vl": None}, GREEDY)
    client = openai.OpenAI(
        base_url="http://testserver/v1",
        api_key="x",
        max_retries=0,
        http_client=TestClient(create_app(service)),
    )
    for ref in (str(vl[1] / "red.png"), f"file://{vl[1] / 'red.png'}"):
        code, msg = _status(ask(client, image_chat(ref)))
        assert (code, msg) == (400, LOCAL_OFF)
    assert MediaPolicy.from_args(None, "image=1").limits == {"image": 1}
    with pytest.raises(LmforgeError, match="--limit_mm_per_prompt"):
        MediaPolicy.from_args(None, "pictures")

    class TextEngine:  # what a text-only Engine lacks: encode_vision
        pass

    with pytest.raises(ApiError, match="this model takes no images"):
        request_images(image_chat(data_url(vl[1] / "red.png")), MediaPolicy(), TextEngine())


def test_openai_parts_to_canonical():
    from lmforge.infer.vision import canonical_messages, place_images

    msgs, refs = canonical_messages(
        [{"role": "system", "content": "be brief"},
         {"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "image_url", "image_url": {"url": "x.png"}},
                                      {"type": "text", "text": " b"}, {"type": "image_url", "image_url": "y.png"}]}]
    )  # fmt: skip
    assert msgs[1]["content"] == "a <image> b<image>" and refs == ["x.png", "y.png"]
    assert place_images(user("q"), 2)[0]["content"] == "<image><image>q"
    with pytest.raises(LmforgeError, match="no user turn"):
        place_images([{"role": "system", "content": "s"}], 1)


# ---------------------------------------------------------------------------------------------
# web UI chat (the tab's logic; the browser test in test_webui.py covers the Gradio wiring)


def test_webui_image_upload_is_read_only_from_gradios_upload_folder(vl, engine, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from lmforge.webui.chat import build_messages, image_message, stream_reply

    uploads = tmp_path / "gradio"
    (uploads / "abc").mkdir(parents=True)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    upload = uploads / "abc" / "red.png"
    upload.write_bytes((vl[1] / "red.png").read_bytes())
    user_msg = image_message(engine, QUESTION, str(upload))
    *_, (_, answer) = stream_reply(engine, build_messages([], user_msg, None, 0), GREEDY)
    assert answer == engine.chat(user(f"<image>{QUESTION}"), GREEDY, images=[str(upload)]).text
    # a follow-up turn keeps the earlier image in the prompt (history turns 1)
    hist = [user_msg, {"role": "assistant", "content": answer}]
    *_, (_, again) = stream_reply(engine, build_messages(hist, "and now?", None, 1), GREEDY)
    want = engine.chat(
        [*user(f"<image>{QUESTION}"), hist[1], *user("and now?")], GREEDY, images=[str(upload)]
    )
    assert again == want.text
    (uploads / "link.png").symlink_to(vl[1] / "red.png")
    for outside in (
        str(vl[1] / "red.png"),
        f"{uploads}/abc/../../{tmp_path.name}/../x.png",
        str(uploads / "link.png"),
    ):
        with pytest.raises(LmforgeError, match="not an upload"):
            image_message(engine, QUESTION, outside)

    class TextEngine:
        pass

    with pytest.raises(LmforgeError, match="this model takes no images"):
        image_message(TextEngine(), QUESTION, str(upload))


# ---------------------------------------------------------------------------------------------
# a second family: LLaVA (image token repeated, no vision_start/end markup, no M-RoPE)


def _tiny_llava(out: str) -> str:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from lmforge.models.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]}, replace_extra_special_tokens=False)
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 28, "patch_size": 14, "projection_dim": 32}  # fmt: skip
    text = {"model_type": "qwen2", "vocab_size": (len(tok) + 63) // 64 * 64, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>")
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    LlavaProcessor(
        image_processor=images, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=tok.chat_template,
    ).save_pretrained(out)  # fmt: skip
    return out


def test_llava_family_greedy_equals_plain_transformers(vl, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from lmforge.infer.engine import Engine
    from lmforge.models.vision import load_processor

    path = _tiny_llava(str(tmp_path / "llava"))
    engine = Engine.from_path(path, device="cpu")
    assert engine.markup == "<image>" and not engine.token_types
    red, blue = str(vl[1] / "red.png"), str(vl[1] / "blue.png")
    proc = load_processor(path)
    text = proc.tokenizer.apply_chat_template(
        user(f"<image>{QUESTION}"), tokenize=False, add_generation_prompt=True
    )
    inputs = proc(text=[text], images=[Image.open(red).convert("RGB")], return_tensors="pt")
    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    with torch.inference_mode():
        ref = model.generate(**inputs, do_sample=False, max_new_tokens=GREEDY.max_new_tokens)
    prompt = engine.encode_vision(user(f"<image>{QUESTION}"), [red], GREEDY)
    assert prompt.ids == inputs["input_ids"][0].tolist()
    done = engine.generate_vision([prompt], GREEDY)[0]
    assert done.token_ids == ref[0, inputs["input_ids"].shape[1] :].tolist()[: len(done.token_ids)]
    rows = [(user("<image>a"), [red]), (user("<image>b"), [blue]), (user("two <image><image>"), [red, blue])]
    prompts = [engine.encode_vision(m, im, GREEDY) for m, im in rows]
    together = engine.generate_vision(prompts, GREEDY, batch_size=3)
    assert [c.token_ids for c in together] == [
        engine.generate_vision([p], GREEDY)[0].token_ids for p in prompts
    ]
