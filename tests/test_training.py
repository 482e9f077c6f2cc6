"""Training stages end to end on the tiny preset: real effects (loss falls, every parameter
changes), run folder contents, exact resume after kill -9, NaN guard, SIGTERM, batch×accumulation
equivalence, checkpoint rotation and atomicity."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.errors import LmforgeError
from lmforge.pipeline import run_train
from lmforge.runs import latest_checkpoint, list_checkpoints

TINY = [
    "--preset",
    "tiny",
    "--save_total_limit",
    "10",
    "--logging_steps",
    "5",
    "--report_to",
    "none",
    "--dataloader_num_workers",
    "0",
    "--plot",
    "false",
]


def _losses(run_dir):
    return [
        json.loads(ln)["loss"]
        for ln in Path(run_dir, "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(ln)
    ]


def _pretrain_args(data, out, *extra):
    return [
        "--dataset",
        str(data),
        "--output_dir",
        str(out),
        "--max_length",
        "64",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--learning_rate",
        "3e-3",
        *TINY,
        *extra,
    ]


@pytest.fixture(scope="module")
def pretrained(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "pretrain"
    run_train(
        "pretrain",
        _pretrain_args(
            synth_dir / "pretrain.jsonl", out, "--max_steps", "40", "--save_steps", "20", "--plot", "true"
        ),
    )
    return out


def test_pretrain_learns_and_writes_the_run_folder(pretrained):
    losses = _losses(pretrained)
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0  # clearly learning
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "lmforge_args.yaml",
        "metrics.jsonl",
        "loss.png",
        "README.md",
        "lmforge_finished.json",
    ):
        assert (pretrained / name).is_file(), name
    assert [p.name for p in list_checkpoints(pretrained)] == ["checkpoint-20", "checkpoint-40"]


def test_every_parameter_changed_and_model_reloads(pretrained, tokenizer):
    from lmforge.models.scratch import init_model

    start = init_model(tokenizer, preset="tiny", seed=42)  # the same init the run used (seed 42)
    trained = AutoModelForCausalLM.from_pretrained(pretrained)
    before = dict(start.named_parameters())
    for name, p in trained.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} did not change"


def test_resolved_args_rerun(pretrained):
    from lmforge.pipeline import resolve_train_config
    from lmforge.runs import read_run_args

    args = read_run_args(pretrained)
    assert args["stage"] == "pretrain" and args["max_length"] == 64 and args["preset"] == "tiny"
    _, cfg = resolve_train_config("pretrain", [str(pretrained / "lmforge_args.yaml")])
    assert cfg["learning_rate"] == 3e-3 and cfg["max_steps"] == 40


def test_sft_from_pretrained_learns(pretrained, synth_dir, tmp_path):
    out = tmp_path / "sft"
    run_train(
        "sft",
        [
            "--model_name_or_path",
            str(pretrained),
            "--dataset",
            str(synth_dir / "sft.jsonl"),
            "--output_dir",
            str(out),
            "--max_length",
            "128",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "2e-3",
            "--max_steps",
            "30",
            "--save_steps",
            "100",
            *TINY,
        ],
    )
    losses = _losses(out)
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    assert (out / "lmforge_finished.json").is_file()


# MKL's reproducible mode (MKL_CBWR) holds only for a fixed thread count, and MKL may drop threads when
# the machine is loaded (MKL_DYNAMIC); one thread makes the bitwise comparison independent of load.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_DYNAMIC": "FALSE"}


def _cli(args, env_extra=None, **kw):
    env = {**os.environ, "LMFORGE_LOG_LEVEL": "WARNING", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args], env=env, capture_output=True, text=True, timeout=300, **kw
    )


@pytest.mark.parametrize(
    "case",
    [
        # (name, extra flags, kill at step, expected checkpoint, total steps)
        ("within-epoch", ["--max_steps", "9", "--save_steps", "3", "--max_samples", "400"], 5, 3, 9),
        (  # two optimizers' states in one checkpoint (lmforge/tuners/muon.py)
            "muon",
            ["--optim", "muon", "--max_steps", "9", "--save_steps", "3", "--max_samples", "400"],
            5,
            3,
            9,
        ),
        (
            "across-epochs",
            ["--num_train_epochs", "3", "--save_steps", "4", "--max_samples", "40"],
            14,
            12,
            27,
        ),
    ],
    ids=lambda c: c[0],
)
def test_kill_9_then_resume_gives_bitwise_identical_losses(synth_dir, tmp_path, case):
    _, extra, kill_at, ckpt_step, total = case
    data = synth_dir / "pretrain.jsonl"
    common = ["train", "pretrain", *extra]
    full = _cli([*common, *_pretrain_args(data, tmp_path / "full")], ONE_THREAD)
    assert full.returncode == 0, full.stderr
    killed = _cli(
        [*common, *_pretrain_args(data, tmp_path / "killed")],
        {**ONE_THREAD, "LMFORGE_FAULT_KILL_AT_STEP": str(kill_at)},
    )
    assert killed.returncode == -signal.SIGKILL
    assert Path(latest_checkpoint(tmp_path / "killed")).name == f"checkpoint-{ckpt_step}"
    assert not (tmp_path / "killed" / "lmforge_finished.json").exists()
    resumed = _cli([*common, *_pretrain_args(data, tmp_path / "killed"), "--from_resume", "1"], ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "killed")
    assert len(a) == len(b) == total
    assert [x.hex() for x in a] == [x.hex() for x in b]  # bitwise


def test_nan_guard_skips_the_injected_step(synth_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_FAULT_NAN_AT_STEP", "3")
    out = tmp_path / "nan"
    run_train(
        "pretrain",
        _pretrain_args(
            synth_dir / "pretrain.jsonl",
            out,
            "--max_steps",
            "6",
            "--save_steps",
            "100",
            "--max_samples",
            "200",
        ),
    )
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert not math.isfinite(records[2]["loss"]) and records[-1]["nan_skipped"] == 1
    assert all(math.isfinite(r["loss"]) for i, r in enumerate(records) if i != 2)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_policy_stop_raises_one_line(synth_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_FAULT_NAN_AT_STEP", "2")
    with pytest.raises(LmforgeError, match=r"^step 2: non-finite loss=nan"):
        run_train(
            "pretrain",
            _pretrain_args(
                synth_dir / "pretrain.jsonl",
                tmp_path / "stop",
                "--max_steps",
                "4",
                "--nan_policy",
                "stop",
                "--max_samples",
                "200",
            ),
        )


def test_batch_times_accumulation_equivalence(synth_dir, tmp_path):
    data = synth_dir / "sft.jsonl"
    runs = {}
    for bs, ga in ((4, 1), (2, 2), (1, 4)):
        out = tmp_path / f"b{bs}g{ga}"
        run_train(
            "sft",
            [
                "--dataset",
                str(data),
                "--output_dir",
                str(out),
                "--max_length",
                "96",
                "--per_device_train_batch_size",
                str(bs),
                "--gradient_accumulation_steps",
                str(ga),
                "--learning_rate",
                "1e-3",
                "--max_steps",
                "3",
                "--save_steps",
                "100",
                "--max_samples",
                "64",
                "--from_weight",
                "none",
                *TINY,
            ],
        )
        runs[(bs, ga)] = (_losses(out), AutoModelForCausalLM.from_pretrained(out).state_dict())
    ref_loss, ref_state = runs[(4, 1)]
    for key, (loss, state) in runs.items():
        assert loss == pytest.approx(ref_loss, rel=1e-5), key
        for name, t in state.items():
            torch.testing.assert_close(t, ref_state[name], rtol=1e-4, atol=5e-5)


def test_sigterm_saves_a_checkpoint_and_exits_zero(synth_dir, tmp_path):
    out = tmp_path / "term"
    args = [
        "train",
        "pretrain",
        "--max_steps",
        "100000",
        "--save_steps",
        "100000",
        *_pretrain_args(synth_dir / "pretrain.jsonl", out),
    ]
    env = {**os.environ, "LMFORGE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.2)
    assert (out / "metrics.jsonl").exists(), proc.communicate(timeout=5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and not (out / "lmforge_finished.json").exists()
    step = json.loads(Path(ckpt, "trainer_state.json").read_text())["global_step"]
    assert step == len(_losses(out))


def test_save_total_limit_and_incomplete_checkpoints_are_ignored(synth_dir, tmp_path):
    out = tmp_path / "rot"
    run_train(
        "pretrain",
        _pretrain_args(
            synth_dir / "pretrain.jsonl",
            out,
            "--max_steps",
            "8",
            "--save_steps",
            "2",
            "--max_samples",
            "200",
            "--save_total_limit",
            "2",
        ),
    )
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-6", "checkpoint-8"]
    assert not list(out.glob(".staging-*"))
    (out / "checkpoint-99").mkdir()  # what a kill during a non-atomic save would leave
    (out / "checkpoint-99" / "model.safetensors").write_bytes(b"partial")
    assert Path(latest_checkpoint(out)).name == "checkpoint-8"


def test_distill_reason_weights_whole_markers(synth_dir, tmp_path, tokenizer):
    import datasets

    from lmforge.data.tokenize import add_marker_weights
    from lmforge.stages.distill_reason import MARKERS

    text = "<think>\nadd 2 and 3\n</think>\n<answer>\n5\n</answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ds = add_marker_weights(datasets.Dataset.from_dict({"input_ids": [ids]}), tokenizer, MARKERS, 10.0)
    weights = ds[0]["loss_weights"]
    weighted = tokenizer.decode([t for t, w in zip(ids, weights) if w == 10.0])
    assert weighted.replace("\n", "") == "<think></think><answer></answer>"
    out = tmp_path / "reason"
    run_train(
        "distill-reason",
        [
            "--dataset",
            str(synth_dir / "reasoning.jsonl"),
            "--output_dir",
            str(out),
            "--from_weight",
            "none",
            "--max_length",
            "128",
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "2e-3",
            "--max_steps",
            "12",
            "--save_steps",
            "100",
            "--marker_weight",
            "10",
            *TINY,
        ],
    )
    losses = _losses(out)
    assert len(losses) == 12 and losses[-1] < losses[0]


def test_streaming_pretrain_packs_like_the_cached_path(synth_dir, tmp_path, tokenizer):
    import datasets

    from lmforge.data.packing import pack_documents, pack_stream
    from lmforge.data.template import encode_text

    texts = [json.loads(ln)["text"] for ln in (synth_dir / "pretrain.jsonl").read_text().splitlines()[:300]]
    docs = datasets.Dataset.from_dict({"input_ids": encode_text(tokenizer, texts)})
    packed, _ = pack_documents(docs, 64, pad_id=0)
    streamed = list(pack_stream(docs.to_iterable_dataset(), 64, pad_id=0))
    assert len(streamed) == len(packed)
    for a, b in zip(streamed, packed):
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
        assert a["position_ids"] == b["position_ids"]
    out = tmp_path / "stream"
    run_train(
        "pretrain",
        _pretrain_args(
            synth_dir / "pretrain.jsonl", out, "--streaming", "--max_steps", "25", "--save_steps", "100"
        ),
    )
    losses = _losses(out)
    assert len(losses) == 25 and sum(losses[-5:]) < sum(losses[:5]) - 0.5
    with pytest.raises(LmforgeError, match="--streaming needs --max_steps"):
        run_train("pretrain", _pretrain_args(synth_dir / "pretrain.jsonl", tmp_path / "x", "--streaming"))


def test_moe_pretrain_logs_router_aux_loss(synth_dir, tmp_path):
    out = tmp_path / "moe"
    run_train(
        "pretrain",
        _pretrain_args(
            synth_dir / "pretrain.jsonl",
            out,
            "--arch",
            "qwen3_moe",
            "--max_steps",
            "4",
            "--save_steps",
            "100",
            "--max_samples",
            "100",
        ),
    )
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["aux_loss"] > 0 for r in records)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "qwen3_moe"


def test_sft_packing_keeps_assistant_only_labels(synth_dir, tmp_path, tokenizer):
    from lmforge.data.tokenize import tokenize_chat
    from lmforge.pipeline import StageContext, load_data, resolve_train_config

    base = ["--dataset", str(synth_dir / "sft.jsonl"), "--max_length", "128", "--max_samples", "200"]
    datasets_by_mode = {}
    for packing in ("false", "true"):
        _, cfg = resolve_train_config("sft", [*base, "--packing", packing])
        ctx = StageContext(stage="sft", cfg=cfg, run_dir=str(tmp_path), tokenizer=tokenizer)
        rows, _ = load_data(ctx, "chat")
        datasets_by_mode[packing] = tokenize_chat(ctx, rows)
    plain, packed = datasets_by_mode["false"], datasets_by_mode["true"]
    assert "position_ids" in packed.column_names and all(len(r) == 128 for r in packed["input_ids"])
    trained_plain = [
        t for ids, lab in zip(plain["input_ids"], plain["labels"]) for t, x in zip(ids, lab) if x != -100
    ]
    trained_packed = [x for lab in packed["labels"] for x in lab if x != -100]
    # the same assistant tokens are trained (a row's first token is never a target, so none is lost)
    assert trained_packed == trained_plain
    out = tmp_path / "sftpack"
    run_train(
        "sft",
        [
            *base,
            "--packing",
            "true",
            "--from_weight",
            "none",
            "--output_dir",
            str(out),
            "--per_device_train_batch_size",
            "4",
            "--learning_rate",
            "3e-3",
            "--max_steps",
            "15",
            "--save_steps",
            "100",
            *TINY,
        ],
    )
    losses = _losses(out)
    assert losses[-1] < losses[0]
