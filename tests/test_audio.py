"""Issue 9, audio LLMs (mdl-toolkit parity): a tiny Qwen2-Audio-layout model built offline
(`lmforge init --audio`), synthetic tone clips whose label (low / mid / high) can only be heard,
LoRA on the chosen `--train_target` parts, CSV → CSV inference, `--merge_lora`, converted folders."""

import csv
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.data.audio import TONE_LABELS, synth_clips

STEPS = 60
LORA = [
    "--tuner",
    "lora",
    "--lora_rank",
    "16",
    "--learning_rate",
    "3e-3",
    "--per_device_train_batch_size",
    "16",
]
# gradient checkpointing (on by default for audio models, as mdl-toolkit) only costs time here
COMMON = ["--max_length", "128", "--logging_steps", "1", "--plot", "false", "--report_to", "none",
          "--gradient_checkpointing", "false"]  # fmt: skip


def run_cli(*args):
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def audio_setup(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("audio")
    model = str(root / "tiny-audio")
    assert run_cli("init", "--audio", "true", "--output_dir", model) == 0
    data = str(root / "data")
    paths = synth_clips(data, num_clips=300, seed=0)
    return {"root": root, "model": model, "data": data, **paths}


@pytest.fixture(scope="module")
def trained(audio_setup):
    """LoRA on encoder + projector + decoder, lm_head in full (the tiny decoder is random, so it
    must learn to emit the label words); embed_tokens stays frozen."""
    s = audio_setup
    run = str(s["root"] / "run")
    run_cli(
        "train", "sft", "--model_name_or_path", s["model"], "--dataset", s["audio_train"], "--base_dir", s["data"],
        *LORA, *COMMON, "--max_steps", STEPS, "--output_dir", run,
        "--train_target", "encoder,projector,decoder,lm_head", "--merge_lora", "true",
        "--val_size", "0.1", "--eval_steps", "30",
    )  # fmt: skip
    return run


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_tiny_audio_model_and_clips(audio_setup):
    from lmforge.models.audio import load_audio_model, load_processor, part_prefixes

    model = load_audio_model(audio_setup["model"])
    proc = load_processor(audio_setup["model"])
    assert set(part_prefixes(model)) == {"encoder", "projector", "decoder", "embed_tokens", "lm_head"}
    assert proc.audio_token_id == model.config.audio_token_index
    rows = read_csv(audio_setup["audio_train"])
    assert len(rows) == 240 and {r["prediction"] for r in rows} == set(TONE_LABELS)
    assert os.path.isfile(os.path.join(audio_setup["data"], rows[0]["audio"]))


def test_fine_tune_learns_labels_and_csv_inference(audio_setup, trained):
    s = audio_setup
    losses = [r["loss"] for r in metrics(trained) if "loss" in r]
    evals = [r["eval_loss"] for r in metrics(trained) if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < evals[0]  # eval loss during training
    assert sum(losses[-5:]) / 5 < 0.3 < losses[0]
    out = str(s["root"] / "pred.csv")
    assert run_cli("infer", "--model", trained, "--input", s["audio_test"], "--base_dir", s["data"],
                   "--output", out, "--max_new_tokens", "6", "--batch_size", "16", "--temperature", "0") == 0  # fmt: skip
    truth, pred = read_csv(s["audio_test"]), read_csv(out)
    assert [r["audio"] for r in pred] == [r["audio"] for r in truth]  # same rows, same order
    assert list(pred[0]) == ["audio", "user_prompt", "prediction"]
    acc = sum(p["prediction"].strip() == t["prediction"] for p, t in zip(pred, truth)) / len(truth)
    assert acc >= 0.8, f"accuracy {acc:.2f} (chance 0.33)"


def test_only_chosen_targets_changed(audio_setup, trained):
    """--merge_lora wrote the full model: adapted linear layers and lm_head moved; the embedding,
    convolutions, positions and norms are bit-identical to the base."""
    base = load_file(os.path.join(audio_setup["model"], "model.safetensors"))
    merged = load_file(os.path.join(trained, "model.safetensors"))
    assert set(base) == set(merged)
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    head = next(k for k in base if k.endswith("lm_head.weight"))  # saved in Qwen2-Audio's own key layout
    assert head in changed
    for part, leaf in (("audio_tower", "layers.0.self_attn.q_proj"), ("audio_tower", "layers.1.fc2"),
                       ("multi_modal_projector", "linear"), ("language_model", "layers.0.self_attn.o_proj"),
                       ("language_model", "layers.1.mlp.down_proj")):  # fmt: skip
        assert any(part in k and k.endswith(leaf + ".weight") for k in changed), (part, leaf)
    for k in changed:
        assert k == head or (k.endswith(".weight") and "norm" not in k), k
    frozen = [k for k in base if "embed_tokens" in k or "conv" in k or "embed_positions" in k or "norm" in k]
    assert frozen and not changed & set(frozen)
    adapter = load_file(os.path.join(trained, "adapter", "adapter_model.safetensors"))
    assert any("audio_tower" in k for k in adapter) and any("multi_modal_projector" in k for k in adapter)
    assert not any("embed_tokens" in k for k in adapter)


def test_merged_model_equals_base_plus_adapter(audio_setup, trained):
    from peft import PeftModel

    from lmforge.data.audio import load_audio
    from lmforge.models.audio import extract_features, load_audio_model, load_processor

    proc = load_processor(trained)
    wave = load_audio(os.path.join(audio_setup["data"], read_csv(audio_setup["audio_test"])[0]["audio"]))
    text = "<|audio_bos|>" + "<|AUDIO|>" * 25 + "<|audio_eos|>hi"
    feats = extract_features(proc, [wave[:16000] if len(wave) >= 16000 else wave])
    n = int(feats["feature_attention_mask"].sum())
    k = (((n - 1) // 2 + 1) - 2) // 2 + 1
    text = "<|audio_bos|>" + "<|AUDIO|>" * k + "<|audio_eos|>hi"
    ids = proc.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    merged = load_audio_model(trained).eval()
    lora = PeftModel.from_pretrained(
        load_audio_model(audio_setup["model"]), os.path.join(trained, "adapter")
    ).eval()
    with torch.no_grad():
        a = merged(input_ids=ids, **feats).logits
        b = lora(input_ids=ids, **feats).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_converted_folder_gives_same_first_loss(audio_setup, tmp_path):
    s = audio_setup
    conv = str(tmp_path / "conv")
    flags = ["--model_name_or_path", s["model"], "--base_dir", s["data"], "--max_length", "128"]
    assert run_cli("data", "convert", "sft", s["audio_train"], "--output", conv, *flags) == 0
    runs = {}
    for name, src in (("raw", s["audio_train"]), ("conv", conv)):
        runs[name] = str(tmp_path / name)
        run_cli("train", "sft", *flags, "--dataset", src, *LORA, *COMMON, "--max_steps", "1",
                "--output_dir", runs[name], "--train_target", "decoder,lm_head")  # fmt: skip
    first = {k: next(r["loss"] for r in metrics(v) if "loss" in r) for k, v in runs.items()}
    assert first["raw"] == pytest.approx(first["conv"], abs=1e-6)


def test_bad_audio_rows_are_one_line_errors(audio_setup, tmp_path, capsys):
    s = audio_setup
    base = ["--model_name_or_path", s["model"], "--base_dir", s["data"], *LORA, *COMMON, "--max_steps", "1"]

    def error(dataset, *extra):
        assert (
            run_cli("train", "sft", *base, "--dataset", dataset, "--output_dir", tmp_path / "r", *extra) != 0
        )
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lmforge: error:")]
        assert len(lines) == 1
        return lines[0]

    bad = tmp_path / "bad.csv"
    bad.write_text("audio,user_prompt,prediction\nclips/tone_00000.wav,q,low\nclips/missing.wav,q,high\n")
    assert "bad.csv: row 2: audio " in error(bad) and "missing.wav: no such file" in error(bad)
    no_audio = tmp_path / "noaudio.csv"
    no_audio.write_text("user_prompt,prediction\nq,low\n")
    assert "needs an `audio` column" in error(no_audio)
    msg = error(s["audio_train"], "--train_target", "encoder,vision")
    assert "--train_target encoder,vision: unknown part vision" in msg
    text_model = tmp_path / "text"
    assert run_cli("init", "--preset", "tiny", "--output_dir", text_model) == 0
    capsys.readouterr()
    assert run_cli("train", "sft", "--model_name_or_path", text_model, "--dataset", s["audio_train"],
                   "--train_target", "decoder", *COMMON, "--max_steps", "1", "--output_dir", tmp_path / "t") != 0  # fmt: skip
    assert "--train_target applies to audio and vision models" in capsys.readouterr().err


def test_full_tuning_of_one_part(audio_setup, tmp_path):
    """--tuner full --train_target projector: nothing but the projector moves."""
    s = audio_setup
    run = str(tmp_path / "full")
    run_cli("train", "sft", "--model_name_or_path", s["model"], "--dataset", s["audio_train"], "--base_dir",
            s["data"], "--tuner", "full", "--learning_rate", "1e-3", "--per_device_train_batch_size", "8",
            *COMMON, "--max_steps", "2", "--output_dir", run, "--train_target", "projector")  # fmt: skip
    base = load_file(os.path.join(s["model"], "model.safetensors"))
    after = load_file(os.path.join(run, "model.safetensors"))
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert changed == {k for k in base if "multi_modal_projector" in k}


def test_infer_on_converted_folder_equals_raw_csv(audio_setup, trained, tmp_path):
    """`infer` takes a `data convert` folder too: same prompts, so the same greedy answers."""
    s = audio_setup
    conv = str(tmp_path / "test_conv")
    assert run_cli("data", "convert", "sft", s["audio_test"], "--output", conv, "--model_name_or_path", trained,
                   "--base_dir", s["data"], "--max_length", "128") == 0  # fmt: skip
    outs = {}
    for name, src in (("raw", s["audio_test"]), ("conv", conv)):
        outs[name] = str(tmp_path / f"{name}.jsonl")
        assert run_cli("infer", "--model", trained, "--input", src, "--base_dir", s["data"],
                       "--output", outs[name], "--max_new_tokens", "6", "--temperature", "0") == 0  # fmt: skip
    rows = {k: [json.loads(x) for x in open(v, encoding="utf-8")] for k, v in outs.items()}
    assert [r["prediction"] for r in rows["raw"]] == [r["prediction"] for r in rows["conv"]]
    assert [r["reference"] for r in rows["conv"]] == [r["prediction"] for r in read_csv(s["audio_test"])]
