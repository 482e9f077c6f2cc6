"""Issue 20, mdl-toolkit (reference seed_002): every flag of `convert-dataset`, `train` and `inference`
is accepted in the reference's spelling and mapped to its effect; README-style commands run with only
the program name translated; audio LLMs train with mdl-toolkit's LoRA r32/alpha32 on encoder,
projector and decoder, merged at the end."""

import csv
import json
import os
import re
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.cli_data import _convert_argv
from lmforge.errors import LmforgeError
from lmforge.infer.batch import resolve_infer_config
from lmforge.pipeline import resolve_train_config

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
COMMANDS = {"convert-dataset": "data convert", "train": "train sft", "inference": "infer"}

# flag → (value given, key it sets, value expected there), per mdl-toolkit command
COMMON = {
    "model-name": ("m", "model_name_or_path", "m"),
    "from-modelscope": ("false", None, None),  # accepted as "what lmforge does"; true stops (below)
    "tokenizing-batch-size": ("8", "preprocessing_batch_size", 8),
    "num-workers": ("3", "dataloader_num_workers", 3),
    "system-prompt": ("Be brief.", "system_prompt", "Be brief."),
    "user-prompt": ("Which pitch?", "user_prompt", "Which pitch?"),
    "base-dir": ("clips", "base_dir", "clips"),
}
EXPECTED = {
    "convert-dataset": {
        **COMMON,
        "num-workers": ("3", "preprocessing_num_workers", 3),  # convert-dataset: processes that convert
        "INPUT": ("in.csv", "dataset", "in.csv"),
        "output": ("conv", "tokenized_path", "conv"),
    },
    "train": {
        **COMMON,
        "train-dataset": ("train.csv", "dataset", "train.csv"),
        "lr": ("2e-4", "learning_rate", 2e-4),
        "lora-rank": ("16", "lora_rank", 16),
        "lora-alpha": ("16", "lora_alpha", 16.0),
        "lora-dropout": ("0.1", "lora_dropout", 0.1),
        "train-target": (["encoder", "lm_head"], "train_target", "encoder,lm_head"),  # repeatable
        "num-epochs": ("0.5", "num_train_epochs", 0.5),
        "warmup-steps": ("3", "warmup_steps", 3),
        "batch-size": ("4", "per_device_train_batch_size", 4),
        "gradient-accumulation-steps": ("2", "gradient_accumulation_steps", 2),
        "gradient-checkpointing": ("false", "gradient_checkpointing", False),
        "bf16": ("false", "bf16", False),
        "quantization": ("4bit", "quantization_bit", 4),
        "eval-dataset": ("test.csv", "val_dataset", "test.csv"),
        "eval-steps": ("7", "eval_steps", 7),
        "eval-batch-size": ("16", "per_device_eval_batch_size", 16),
        "eval-accumulation-steps": ("2", "eval_accumulation_steps", 2),
        "report-to": (["wandb", "tensorboard"], "report_to", ["wandb", "tensorboard"]),  # repeatable
        "output": ("run", "output_dir", "run"),
        "resume-from-checkpoint": ("true", "resume_from_checkpoint", "latest"),
        "save-steps": ("50", "save_steps", 50),
        "save-total-limit": ("2", "save_total_limit", 2),
        "merge-lora": ("false", "merge_lora", False),
    },
    "inference": {
        **COMMON,
        "model-name": ("m", "model", "m"),
        "system-prompt": ("Be brief.", "system", "Be brief."),
        "tokenizing-batch-size": ("2", "preprocessing_batch_size", 2),
        "num-workers": ("3", "preprocessing_num_workers", 3),  # threads that read the clips
        "INPUT": ("in.csv", "input", "in.csv"),
        "output": ("pred.csv", "output", "pred.csv"),
        "batch-size": ("4", "batch_size", 4),
        "max-length": ("64", "max_length", 64),
    },
}


def reference_flags() -> dict[str, list[str]]:
    """Flags per command as seed_002 lists them: convert-dataset's own, and its options other than
    INPUT / --output for train and inference too (as the reference says)."""
    files = sorted(REFERENCE.glob("seed_002_*.md"))
    if not files:
        pytest.skip("shared/reference is not beside this checkout", allow_module_level=True)
    text = files[0].read_text(encoding="utf-8")
    sections = re.split(r"^## `mdl-toolkit ([a-z-]+)`", text, flags=re.M)
    own = {
        name: re.findall(r"^\* `(?:--)?([A-Za-z0-9-]+)`", body, flags=re.M)
        for name, body in zip(sections[1::2], sections[2::2])
    }
    shared = [f for f in own["convert-dataset"] if f not in ("INPUT", "output")]
    out = {"convert-dataset": own["convert-dataset"]}
    for name in ("train", "inference"):
        out[name] = shared + [f for f in own[name] if f not in shared]
    return out


def resolved(command: str, argv: list[str]) -> dict:
    """The config `lmforge COMMAND argv` would run with, resolved in-process (nothing runs)."""
    if command == "train":
        return resolve_train_config("sft", argv)[1].values
    if command == "convert-dataset":
        stage, flags = _convert_argv(argv)
        return resolve_train_config(stage, flags)[1].values
    infer, gen = resolve_infer_config(argv)
    return {**vars(gen), **vars(infer)}


def flag_argv(flag: str, value) -> list[str]:
    if flag == "INPUT":
        return [value]
    return [w for v in ([value] if isinstance(value, str) else value) for w in (f"--{flag}", v)]


def test_reference_lists_fifty_flag_command_pairs():
    flags = reference_flags()
    assert sum(map(len, flags.values())) == 50
    for name, table in EXPECTED.items():
        assert set(flags[name]) == set(table), name  # every flag of the reference has a row here


@pytest.mark.parametrize(
    "command,flag", [(c, f) for c, table in EXPECTED.items() for f in table], ids=lambda x: str(x)
)
def test_every_reference_flag_is_accepted_with_its_effect(command, flag):
    if flag not in reference_flags()[command]:
        pytest.fail(f"{flag} is not a flag of mdl-toolkit {command} in seed_002")
    value, key, expected = EXPECTED[command][flag]
    values = resolved(command, flag_argv(flag, value))
    if key is not None:
        assert values[key] == expected


@pytest.mark.parametrize("command", list(EXPECTED))
def test_from_modelscope_true_stops_with_one_line(command):
    with pytest.raises(LmforgeError, match=r"^command line: --from_modelscope true: ModelScope downloads"):
        resolved(command, ["--from-modelscope", "true"])


def test_infer_input_positional_or_flag_not_both():
    with pytest.raises(LmforgeError, match="give one input, positional or --input"):
        resolve_infer_config(["a.csv", "--input", "b.csv"])
    with pytest.raises(LmforgeError, match="unexpected argument 'b.csv'"):
        resolve_infer_config(["a.csv", "b.csv"])


# ---------------------------------------------------------------- README-style commands, tiny sizes
def run_cli(*words) -> int:
    return main([str(w) for w in words])


def mdl(command: str, *args) -> int:
    """`mdl-toolkit COMMAND ARGS` with only the program name translated."""
    return run_cli(*COMMANDS[command].split(), *args)


def one_error(capsys) -> str:
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lmforge: error:")]
    assert len(lines) == 1, lines
    return lines[0]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    from lmforge.data.audio import synth_clips

    root = tmp_path_factory.mktemp("mdl")
    model = root / "tiny-audio"
    assert run_cli("init", "--audio", "true", "--output_dir", model) == 0
    data = root / "data"
    paths = synth_clips(str(data), num_clips=20, seed=0)
    return {"root": root, "model": str(model), "data": str(data), **paths}


@pytest.fixture(scope="module")
def trained(setup):
    """mdl-toolkit's README train command: no tuning flags at all (a step cap and a larger lr so one
    step moves the weights visibly)."""
    s = setup
    run = s["root"] / "run"
    code = mdl("train", "--model-name", s["model"], "--train-dataset", s["audio_train"], "--eval-dataset",
               s["audio_test"], "--base-dir", s["data"], "--output", run, "--lr", "5e-3", "--max_steps", "1",
               "--plot", "false")  # fmt: skip
    assert code == 0
    return str(run)


def test_default_audio_tuning_is_lora_r32_on_three_parts_merged(setup, trained):
    from peft import PeftModel
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from lmforge.data.audio import load_audio
    from lmforge.models.audio import extract_features, num_audio_tokens
    from lmforge.training.audio import expand_audio

    adapter = json.loads(Path(trained, "adapter", "adapter_config.json").read_text())
    assert adapter["r"] == 32 and adapter["lora_alpha"] == 32 and adapter["lora_dropout"] == 0
    targets = adapter["target_modules"]
    targets = " ".join(targets) if isinstance(targets, list) else targets
    for part in ("audio_tower", "multi_modal_projector", "language_model"):
        assert part in targets, part
    # the run folder is the merged model: plain transformers loads it, no adapter involved
    proc = AutoProcessor.from_pretrained(trained)
    merged = Qwen2AudioForConditionalGeneration.from_pretrained(trained).eval()
    base = Qwen2AudioForConditionalGeneration.from_pretrained(setup["model"]).eval()
    lora = PeftModel.from_pretrained(
        Qwen2AudioForConditionalGeneration.from_pretrained(setup["model"]), os.path.join(trained, "adapter")
    ).eval()
    clip = next(csv.DictReader(open(setup["audio_test"], encoding="utf-8")))["audio"]
    wave = load_audio(os.path.join(setup["data"], clip), 16000)
    ids = proc.tokenizer("<|audio_bos|><|AUDIO|><|audio_eos|>Is this tone low?", add_special_tokens=False)[
        "input_ids"
    ]
    ids, _ = expand_audio(ids, None, proc.audio_token_id, num_audio_tokens(proc, wave))
    inputs = {"input_ids": torch.tensor([ids]), **extract_features(proc, [wave])}
    with torch.no_grad():
        logits = {k: m(**inputs).logits for k, m in (("merged", merged), ("lora", lora), ("base", base))}
        greedy = {
            k: m.generate(**inputs, max_new_tokens=6, do_sample=False)[0].tolist()
            for k, m in (("merged", merged), ("lora", lora))
        }
    assert torch.allclose(logits["merged"], logits["lora"], atol=1e-4)
    assert (logits["merged"] - logits["base"]).abs().max() > 1e-3  # the training step is in the merge
    assert greedy["merged"] == greedy["lora"]


def test_text_model_defaults_unchanged_and_lora_flags_need_an_adapter(setup, tmp_path, capsys):
    _, audio = resolve_train_config("sft", ["--model-name", setup["model"]])
    text = tmp_path / "text"
    assert run_cli("init", "--preset", "tiny", "--output_dir", text) == 0
    _, plain = resolve_train_config("sft", ["--model-name", str(text)])
    assert (audio["tuner"], audio["lora_rank"], audio["merge_lora"]) == ("lora", 32, True)
    assert (plain["tuner"], plain["lora_rank"], plain["merge_lora"]) == ("full", 8, False)
    assert plain["learning_rate"] == 5e-7 and audio["learning_rate"] == 1e-4
    capsys.readouterr()
    for model, extra in ((text, []), (setup["model"], ["--tuner", "full"])):
        assert mdl("train", "--model-name", model, "--train-dataset", setup["audio_train"], "--lora-rank", "16",
                   *extra, "--output", tmp_path / "r") == 2  # fmt: skip
        assert "--lora_rank 16: no adapter is trained with --tuner full; add --tuner lora" in one_error(
            capsys
        )
    assert not (tmp_path / "r").exists()


def test_readme_style_invocations(setup, trained, tmp_path, capsys):
    s = setup
    conv = tmp_path / "conv"
    assert mdl("convert-dataset", s["audio_train"], "--output", conv, "--model-name", s["model"],
               "--base-dir", s["data"], "--tokenizing-batch-size", "4", "--num-workers", "1",
               "--user-prompt", "Which pitch?", "--system-prompt", "Answer in one word.") == 0  # fmt: skip
    assert (conv / "lmforge_cache.json").is_file()
    pred = tmp_path / "pred.csv"
    assert mdl("inference", s["audio_test"], "--output", pred, "--model-name", trained, "--base-dir", s["data"],
               "--batch-size", "4", "--max-length", "128", "--tokenizing-batch-size", "2", "--num-workers", "2",
               "--system-prompt", "Answer in one word.", "--temperature", "0") == 0  # fmt: skip
    truth = list(csv.DictReader(open(s["audio_test"], encoding="utf-8")))
    rows = list(csv.DictReader(open(pred, encoding="utf-8")))
    assert [r["audio"] for r in rows] == [r["audio"] for r in truth] and all("prediction" in r for r in rows)
    capsys.readouterr()
    refused = {
        ("train", "--quantization", "4bit"): "--quantization_bit 4",
        ("train", "--from-modelscope", "true"): "ModelScope downloads are not available",
        ("inference", "--max-length", "8"): "(which counts prompt and answer together)",
    }
    for (command, *flags), reason in refused.items():
        data = ["--train-dataset", s["audio_train"]] if command == "train" else [s["audio_test"]]
        model = s["model"] if command == "train" else trained
        out = tmp_path / f"{command}-out"
        assert (
            mdl(command, *data, "--model-name", model, "--base-dir", s["data"], "--output", out, *flags) == 2
        )
        assert reason in one_error(capsys)
        assert not out.exists()


def test_infer_max_length_counts_prompt_and_answer(setup, tmp_path):
    """mdl-toolkit's --max-length: prompt + answer; each row's answer stops where its prompt leaves
    off, and is the start of the uncapped greedy answer (the untrained model never stops early)."""
    s = setup
    outs = {}
    for name, extra in (("free", []), ("capped", ["--max-length", "CAP"])):
        if extra:
            extra[1] = str(max(r["usage"]["prompt_tokens"] for r in outs["free"]) + 3)
        path = tmp_path / f"{name}.jsonl"
        assert mdl("inference", s["audio_test"], "--output", path, "--model-name", s["model"], "--base-dir",
                   s["data"], "--max_new_tokens", "24", "--temperature", "0", *extra) == 0  # fmt: skip
        outs[name] = read_jsonl(path)
    cap = max(r["usage"]["prompt_tokens"] for r in outs["free"]) + 3
    prompts = {r["usage"]["prompt_tokens"] for r in outs["free"]}
    assert len(prompts) > 1  # clips of different lengths: the caps differ per row
    cut = 0
    for free, capped in zip(outs["free"], outs["capped"]):
        room = cap - free["usage"]["prompt_tokens"]
        assert capped["usage"]["total_tokens"] <= cap
        if free["usage"]["completion_tokens"] > room:
            cut += 1
            assert capped["usage"]["completion_tokens"] == room and capped["finish_reason"] == "length"
        # a cut inside a multi-byte character decodes to U+FFFD at the end
        assert free["prediction"].startswith(capped["prediction"].rstrip("\ufffd"))
    assert cut >= 2  # the cap really cut answers, at different lengths
