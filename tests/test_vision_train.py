"""Issue 22, vision-LLM training: a tiny Qwen2-VL-layout model (`lmforge init --vision`) learns to
answer questions about synthetic pictures (`data synth --images`) whose answers only the picture
holds; image tokens and prompts carry no loss; the saved model reloads with plain transformers;
--freeze_* / --train_target change exactly the chosen parts; a LoRA run merges."""

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.errors import LmforgeError

COMMON = ["--max_length", "96", "--logging_steps", "5", "--plot", "false", "--report_to", "none",
          "--save_strategy", "no", "--seed", "0"]  # fmt: skip
LEARN = ["--learning_rate", "2e-3", "--num_train_epochs", "5", "--per_device_train_batch_size", "16"]
SHORT = [
    "--max_steps",
    "2",
    "--max_samples",
    "8",
    "--per_device_train_batch_size",
    "4",
    "--learning_rate",
    "1e-2",
]


def run_cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("vision")
    model, data = root / "tiny-vl", root / "data"
    assert run_cli("init", "--vision", "true", "--output_dir", model) == 0
    assert run_cli("data", "synth", "--images", 300, "--output_dir", data, "--scale", 0.01) == 0
    return SimpleNamespace(root=root, model=str(model), data=data)


def read_rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_synth_rows_hold_answers_only_in_images(setup):
    train, test = read_rows(setup.data / "vision_train.jsonl"), read_rows(setup.data / "vision_test.jsonl")
    assert (len(train), len(test)) == (240, 60)
    assert not {r["images"][0] for r in train} & {r["images"][0] for r in test}
    answers = {}
    for r in train:
        assert r["messages"][0]["content"].count("<image>") == len(r["images"]) == 1
        assert (setup.data / r["images"][0]).is_file()
        answers.setdefault(r["messages"][0]["content"], set()).add(r["messages"][1]["content"])
    assert all(len(a) >= 3 for a in answers.values())  # one question text, many answers


# --- tokenising and batching (the collator the trainer uses) ------------------------------------
def encode(model_dir, jsonl, **cfg):
    """Test rows tokenised by lmforge's own vision path, plus the processor."""
    from lmforge.data.load import load_rows
    from lmforge.models.vision import load_processor
    from lmforge.training.vision import tokenize_vision_chat

    proc = load_processor(model_dir)
    rows, _ = load_rows(str(jsonl), "chat")
    defaults = {"max_length": 96, "dataset": str(jsonl), "train_on_prompt": False, "enable_thinking": True}
    ctx = SimpleNamespace(processor=proc, cfg={**defaults, **cfg}, stats={})
    return tokenize_vision_chat(ctx, rows), proc


def collate(proc, rows):
    from lmforge.training.vision import VisionCollator

    return VisionCollator(proc, proc.tokenizer.pad_token_id, mm_token_types=True)(list(rows))


@pytest.mark.parametrize("train_on_prompt", [False, True])
def test_labels_only_on_the_answer_never_on_image_tokens(setup, train_on_prompt):
    ds, proc = encode(setup.model, setup.data / "vision_test.jsonl", train_on_prompt=train_on_prompt)
    row, tok = ds[0], proc.tokenizer
    ids, labels = row["input_ids"], row["labels"]
    image_id = proc.image_token_id
    # the processor's own count: grid_t * grid_h * grid_w / merge_size**2 (56x56 → 4 tokens)
    from lmforge.data.vision import load_image

    grid = proc.image_processor(images=[load_image(row["images"][0])], return_tensors="pt")["image_grid_thw"]
    assert ids.count(image_id) == int(grid.prod()) // proc.image_processor.merge_size**2 == 4
    text = tok.decode(ids)
    assert "<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>What colour is the shape?" in text
    assert all(lab == -100 for t, lab in zip(ids, labels) if t == image_id)
    trained = tok.decode([t for t, lab in zip(ids, labels) if lab != -100])
    answer = read_rows(setup.data / "vision_test.jsonl")[0]["messages"][1]["content"]
    if train_on_prompt:
        assert "What colour is the shape?" in trained and "<|image_pad|>" not in trained
    else:
        assert trained == answer + "<|im_end|>"  # the answer and its end-of-turn token
    batch = collate(proc, ds.select(range(3)))
    assert batch["pixel_values"].shape[0] == 3 * 16 and batch["image_grid_thw"].tolist() == [[1, 4, 4]] * 3
    assert batch["mm_token_type_ids"].sum() == 12


def test_placeholder_count_must_match_images(setup, tmp_path):
    row = read_rows(setup.data / "vision_test.jsonl")[0]
    row["images"] = [str(setup.data / row["images"][0])] * 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(row) + "\n")
    # the loader (data/vision.py) or, for rows that bypass it, the tokeniser: one line naming the row
    msg = r"bad.jsonl(: row |:)1: (1 <image> placeholders but 2 images|\"images\" lists 2 file\(s\) but)"
    with pytest.raises(LmforgeError, match=msg):
        encode(setup.model, bad)


# --- learning ------------------------------------------------------------------------------------
def greedy_answers(model_dir, data_dir, rows, *, blank=False):
    """Plain transformers only (no lmforge code): AutoModelForImageTextToText + AutoImageProcessor +
    AutoTokenizer, the Qwen2-VL prompt built by hand. `blank`: every image replaced by a grey one."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    ip, tok = AutoImageProcessor.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    out = []
    for r in rows:
        image = Image.open(data_dir / r["images"][0]).convert("RGB")
        if blank:
            image = Image.new("RGB", image.size, (228, 228, 228))
        px = ip(images=[image], return_tensors="pt")
        n = int(px["image_grid_thw"].prod()) // ip.merge_size**2
        markup = "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>"
        msgs = [{"role": "user", "content": r["messages"][0]["content"].replace("<image>", markup)}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == pad).long(),
                **px, max_new_tokens=4, do_sample=False,
            )  # fmt: skip
        new = gen[0, ids.shape[1] :].tolist()
        out.append((tok.decode(new, skip_special_tokens=True).strip(), new))
    return out


def heldout_loss(model_dir, data_dir):
    """Mean answer-token loss on the held-out rows, batched by lmforge's training collator."""
    from lmforge.models.vision import load_vision_model

    ds, proc = encode(model_dir, data_dir / "vision_test.jsonl")
    model = load_vision_model(model_dir).eval()
    with torch.no_grad():
        return float(model(**collate(proc, ds)).loss)


def exact_match(answers, rows):
    return sum(a == r["messages"][1]["content"] for (a, _), r in zip(answers, rows)) / len(rows)


def text_only_baseline(rows):
    """The best exact-match a model that ignores the image can reach: one answer per question text
    (the question's most frequent answer)."""
    by_question = Counter((r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows)
    best = Counter()
    for (q, _), n in by_question.items():
        best[q] = max(best[q], n)
    return sum(best.values()) / len(rows)


@pytest.fixture(scope="module")
def trained(setup):
    """Full fine-tuning with the vision defaults (vision tower and projector frozen, as LLaMA-Factory)."""
    run = setup.root / "run-full"
    assert run_cli(
        "train", "sft", "--model_name_or_path", setup.model, "--dataset", setup.data / "vision_train.jsonl",
        *LEARN, *COMMON, "--output_dir", run,
    ) == 0  # fmt: skip
    return str(run)


def test_sft_learns_to_read_the_image(setup, trained):
    rows = read_rows(setup.data / "vision_test.jsonl")
    baseline = text_only_baseline(rows)  # 0.35 on this data: colour 1/4, shape 1/3, count 1/3 classes
    before, after = heldout_loss(setup.model, setup.data), heldout_loss(trained, setup.data)
    em_before = exact_match(greedy_answers(setup.model, setup.data, rows), rows)
    answers = greedy_answers(trained, setup.data, rows)
    em_after = exact_match(answers, rows)
    em_blank = exact_match(greedy_answers(trained, setup.data, rows, blank=True), rows)
    print(f"held-out loss {before:.3f} → {after:.3f}; exact match {em_before:.2f} → {em_after:.2f} "
          f"(text-only best {baseline:.2f}, grey images {em_blank:.2f})")  # fmt: skip
    assert after < before / 3
    assert em_before == 0.0
    assert em_after >= baseline + 0.15, (em_after, baseline)
    colour = [r["messages"][0]["content"].startswith("<image>What colour") for r in rows]
    colour_em = sum(a == r["messages"][1]["content"] for (a, _), r, c in zip(answers, rows, colour) if c)
    assert colour_em / sum(colour) >= 0.8
    assert em_blank <= baseline  # the answers come from the picture


def test_saved_model_reloads_and_matches_the_training_forward(setup, trained):
    """The run folder reloads with lmforge's processor loader and with plain transformers; the greedy
    answer of plain transformers equals the argmax of lmforge's collator forward, token for token."""
    from lmforge.models.vision import load_processor, load_vision_model

    saved, base = load_processor(trained).image_processor, load_processor(setup.model).image_processor
    assert saved.to_dict() == base.to_dict()  # same pixel bounds, patch and merge sizes
    rows = read_rows(setup.data / "vision_test.jsonl")[:8]
    answers = greedy_answers(trained, setup.data, rows)
    ds, proc = encode(trained, setup.data / "vision_test.jsonl")
    ds = ds.select(range(8))
    model = load_vision_model(trained).eval()
    with torch.no_grad():
        logits = model(**collate(proc, ds)).logits  # (B, T, V)
    checked = 0
    for i, ((text, new), row) in enumerate(zip(answers, rows)):
        labels = torch.tensor(ds[i]["labels"])
        pos = (labels != -100).nonzero().flatten()  # answer tokens (+ end of turn)
        predicted = logits[i, pos - 1].argmax(-1).tolist()
        assert new[0] == predicted[0]
        if text == row["messages"][1]["content"]:
            assert new[: len(pos)] == predicted[: len(new)]
            checked += 1
    assert checked >= 4


# --- what trains ---------------------------------------------------------------------------------
def params(model_dir):
    """{parameter name: tensor} of a saved vision model, by module name (the file's keys differ)."""
    from lmforge.models.vision import load_vision_model

    return {n: p.detach() for n, p in load_vision_model(str(model_dir)).named_parameters()}


def part_changes(before_dir, after_dir):
    """{part: (changed tensors, all tensors)} between two saved models."""
    from lmforge.models.parts import owner_part, part_prefixes
    from lmforge.models.vision import load_vision_model

    prefixes = part_prefixes(load_vision_model(before_dir))
    a, b = params(before_dir), params(after_dir)
    out = {}
    for name, t in a.items():
        part = owner_part(name, prefixes) or ("lm_head" if name.startswith("lm_head") else None)
        changed, total = out.get(part, (0, 0))
        out[part] = (changed + int(not torch.equal(t, b[name])), total + 1)
    return out


@pytest.mark.parametrize(
    "flags, trains",
    [
        ([], {"decoder", "lm_head"}),  # LLaMA-Factory's default: vision tower and projector frozen
        (["--train_target", "projector"], {"projector"}),
        (["--freeze_vision_tower", "false", "--freeze_language_model", "true"], {"encoder"}),
        (["--freeze_vit", "false", "--train_target", "encoder,projector"], {"encoder", "projector"}),
    ],
)
def test_exactly_the_chosen_parts_change(setup, flags, trains):
    run = setup.root / f"run-parts-{'-'.join(trains)}"
    assert run_cli(
        "train", "sft", "--model_name_or_path", setup.model, "--dataset", setup.data / "vision_train.jsonl",
        *SHORT, *COMMON, *flags, "--output_dir", run,
    ) == 0  # fmt: skip
    changes = part_changes(setup.model, run)
    assert set(changes) == {"encoder", "projector", "decoder", "lm_head"}
    for part, (changed, total) in changes.items():
        if part in trains:
            assert changed == total, (part, changed, total)  # every tensor of a chosen part moved
        else:
            assert changed == 0, (part, changed, total)  # bit-identical


def test_freeze_tuning_frees_the_projector(setup):
    """--tuner freeze trains its decoder layers, plus the projector that the flag frees."""
    run = setup.root / "run-freeze"
    assert run_cli(
        "train", "sft", "--model_name_or_path", setup.model, "--dataset", setup.data / "vision_train.jsonl",
        *SHORT, *COMMON, "--tuner", "freeze", "--freeze_trainable_layers", "1",
        "--freeze_multi_modal_projector", "false", "--output_dir", run,
    ) == 0  # fmt: skip
    a, b = params(setup.model), params(run)
    moved = {n for n in a if not torch.equal(a[n], b[n])}
    assert moved and all(".merger." in n or ".layers.1." in n for n in moved), sorted(moved)
    assert any(".merger." in n for n in moved) and any(".layers.1." in n for n in moved)


def test_contradicting_freeze_flag_is_one_line(setup, capsys):
    assert run_cli(
        "train", "sft", "--model_name_or_path", setup.model, "--dataset", setup.data / "vision_train.jsonl",
        *SHORT, *COMMON, "--train_target", "encoder", "--freeze_vision_tower", "true",
        "--output_dir", setup.root / "run-clash",
    ) != 0  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1]
        == "lmforge: error: --train_target encoder trains what --freeze_vision_tower true freezes; drop one"
    )


def test_lora_defaults_to_the_language_model_and_merges(setup):
    from peft import PeftModel

    from lmforge.models.vision import load_vision_model

    run, merged = setup.root / "run-lora", setup.root / "merged"
    assert run_cli(
        "train", "sft", "--model_name_or_path", setup.model, "--dataset", setup.data / "vision_train.jsonl",
        *SHORT, *COMMON, "--tuner", "lora", "--output_dir", run,
    ) == 0  # fmt: skip
    keys = load_file(f"{run}/adapter_model.safetensors")
    assert keys and all(".language_model." in k for k in keys), sorted(keys)[:3]
    assert any(not torch.all(v == 0) for k, v in keys.items() if "lora_B" in k)
    assert run_cli("merge", run, "--output_dir", merged) == 0
    rows = read_rows(setup.data / "vision_test.jsonl")[:6]
    merged_answers = greedy_answers(str(merged), setup.data, rows)
    ds, proc = encode(str(merged), setup.data / "vision_test.jsonl")
    batch = collate(proc, ds.select(range(6)))
    peft_model = PeftModel.from_pretrained(load_vision_model(setup.model), str(run)).eval()
    full = load_vision_model(str(merged)).eval()
    with torch.no_grad():
        a, b = peft_model(**batch).logits, full(**batch).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # merged greedy tokens == base+adapter greedy tokens (first answer token, from the same prefix)
    for i, (_, new) in enumerate(merged_answers):
        pos = (torch.tensor(ds[i]["labels"]) != -100).nonzero().flatten()[0]
        assert new[0] == int(a[i, pos - 1].argmax())


def test_text_rows_mix_with_image_rows(setup):
    """A vision model trains on text-only chat rows too: mixed in, they get no image tokens."""
    from lmforge.data.load import load_rows
    from lmforge.models.vision import load_processor
    from lmforge.training.vision import tokenize_vision_chat

    proc = load_processor(setup.model)
    rows, _ = load_rows(f"{setup.data / 'vision_test.jsonl'},{setup.data / 'lora_identity.jsonl'}", "chat")
    cfg = {"max_length": 96, "dataset": "mix", "train_on_prompt": False, "enable_thinking": True}
    ds = tokenize_vision_chat(SimpleNamespace(processor=proc, cfg=cfg, stats={}), rows)
    with_images = [r for r in ds if r["images"]]
    assert len(with_images) == 60 and len(ds) > 60
    assert all(proc.image_token_id not in r["input_ids"] for r in ds if not r["images"])
    batch = collate(proc, [with_images[0], next(r for r in ds if not r["images"])])
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]]


def build_tiny_llava(out_dir):
    """A LLaVA-layout model (CLIP vision tower, projector, Qwen2 decoder) with a LlavaProcessor whose
    call expands `<image>` to 4 tokens for a 28-pixel crop: the second family, built in the test."""
    import transformers as T

    from lmforge.models.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]}, replace_extra_special_tokens=False)
    ip = getattr(T, "CLIPImageProcessorPil", T.CLIPImageProcessor)(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    )
    config = T.LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        text_config={"model_type": "qwen2", "vocab_size": (len(tok) + 63) // 64 * 64, "hidden_size": 64,
                     "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "pad_token_id": tok.pad_token_id},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    torch.manual_seed(0)
    T.LlavaForConditionalGeneration(config).save_pretrained(out_dir)
    T.LlavaProcessor(
        image_processor=ip, tokenizer=tok, patch_size=14, num_additional_image_tokens=1,
        vision_feature_select_strategy="default", chat_template=tok.chat_template,
    ).save_pretrained(out_dir)  # fmt: skip
    return str(out_dir)


def test_a_llava_style_model_trains_through_the_same_path(setup):
    """Processor-generic: `<image>` stays LLaVA's own token, its count comes from LlavaProcessor, the
    parts are vision_tower / multi_modal_projector / language_model; defaults train the decoder."""
    from lmforge.models.vision import load_processor

    model = build_tiny_llava(setup.root / "tiny-llava")
    ds, proc = encode(model, setup.data / "vision_test.jsonl")
    assert ds[0]["input_ids"].count(proc.image_token_id) == 4
    assert "<|vision_start|>" not in proc.tokenizer.decode(ds[0]["input_ids"])
    run = setup.root / "run-llava"
    assert run_cli(
        "train", "sft", "--model_name_or_path", model, "--dataset", setup.data / "vision_train.jsonl",
        *SHORT, *COMMON, "--output_dir", run,
    ) == 0  # fmt: skip
    assert type(load_processor(str(run))).__name__ == "LlavaProcessor"
    changes = part_changes(model, run)
    assert {p for p, (changed, _) in changes.items() if changed} == {"decoder", "lm_head"}
    assert all(changed == total for p, (changed, total) in changes.items() if p in ("decoder", "lm_head"))


def test_video_rows_are_refused_in_one_line(setup):
    from datasets import Dataset

    from lmforge.models.vision import load_processor
    from lmforge.training.vision import tokenize_vision_chat

    rows = Dataset.from_list(
        [{"messages": [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "x"}],
          "tools": None, "images": [], "videos": ["/data/clip.mp4"]}]
    )  # fmt: skip
    cfg = {"max_length": 96, "dataset": "v.jsonl", "train_on_prompt": False, "enable_thinking": True}
    ctx = SimpleNamespace(processor=load_processor(setup.model), cfg=cfg, stats={})
    with pytest.raises(LmforgeError, match=r"^v.jsonl: row 1: video rows are not trained yet"):
        tokenize_vision_chat(ctx, rows)
