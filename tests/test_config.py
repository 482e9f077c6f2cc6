"""Config: flags + YAML precedence, aliases, did-you-mean, --help coverage, MiniMind flags."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.config.loader import resolve
from lmforge.errors import LmforgeError
from lmforge.pipeline import resolve_train_config

# Every flag of MiniMind's pretrain and SFT scripts (reference/seed_001 §1, §2).
MINIMIND_PRETRAIN_SFT_FLAGS = [
    ("save_dir", "out"),
    ("save_weight", "pretrain"),
    ("epochs", "1"),
    ("batch_size", "32"),
    ("learning_rate", "5e-4"),
    ("device", "cpu"),
    ("dtype", "bfloat16"),
    ("num_workers", "1"),
    ("accumulation_steps", "8"),
    ("grad_clip", "1.0"),
    ("log_interval", "100"),
    ("save_interval", "100"),
    ("hidden_size", "512"),
    ("num_hidden_layers", "8"),
    ("max_seq_len", "512"),
    ("use_moe", "0"),
    ("data_path", "d.jsonl"),
    ("from_weight", "none"),
    ("from_resume", "0"),
    ("use_wandb", None),
    ("wandb_project", "MiniMind-Pretrain"),
]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def _argv(pairs):
    out = []
    for k, v in pairs:
        out.append(f"--{k}")
        if v is not None:
            out.append(v)
    return out


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_every_minimind_flag_is_accepted_and_mapped(stage):
    _, cfg = resolve_train_config(stage, _argv(MINIMIND_PRETRAIN_SFT_FLAGS))
    assert cfg["num_train_epochs"] == 1 and cfg["per_device_train_batch_size"] == 32
    assert cfg["gradient_accumulation_steps"] == 8 and cfg["max_grad_norm"] == 1.0
    assert cfg["logging_steps"] == 100 and cfg["save_steps"] == 100
    assert cfg["dataloader_num_workers"] == 1 and cfg["max_length"] == 512
    assert cfg["dataset"] == "d.jsonl" and cfg["model_name_or_path"] is None
    assert cfg["resume_from_checkpoint"] is None and cfg["report_to"] == "wandb"
    assert cfg["use_moe"] is False and cfg["dtype"] == "bfloat16"


def test_reference_flag_tables_are_covered():
    files = sorted(REFERENCE.glob("seed_001_*.md"))
    if not files:
        pytest.skip("shared/reference is not beside this checkout")
    text = files[0].read_text(encoding="utf-8", errors="replace")
    # sections 1 (pretrain) and 2 (SFT) end where section 3 starts
    body = text.split("## 3.")[0]
    flags = set(re.findall(r"^\| `--([a-z_]+)`", body, flags=re.M))
    assert flags, "no flag table found"
    assert flags <= {k for k, _ in MINIMIND_PRETRAIN_SFT_FLAGS}


def test_precedence_defaults_yaml_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("learning_rate: 1e-3\nepochs: 3\nmax_length: 128\n")
    _, cfg = resolve_train_config("sft", [str(cfg_file), "--learning_rate", "2e-5"])
    assert cfg["learning_rate"] == 2e-5  # flag beats YAML
    assert cfg["num_train_epochs"] == 3  # YAML (via alias) beats the stage default
    assert cfg["max_length"] == 128
    assert cfg["per_device_train_batch_size"] == 16  # SFT stage default (MiniMind)


def test_unknown_key_suggests(tmp_path):
    with pytest.raises(LmforgeError, match=r"unknown option --learnig_rate; did you mean --learning_rate\?"):
        resolve_train_config("pretrain", ["--learnig_rate", "1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("hiden_size: 3\n")
    with pytest.raises(
        LmforgeError, match=r"bad.yaml: unknown option --hiden_size; did you mean --hidden_size"
    ):
        resolve_train_config("pretrain", [str(bad)])


def test_bad_values_are_one_line_errors():
    with pytest.raises(LmforgeError, match=r"--num_train_epochs expects float; got 'two'"):
        resolve_train_config("pretrain", ["--epochs", "two"])
    with pytest.raises(LmforgeError, match="--nan_policy must be one of skip, stop"):
        resolve_train_config("pretrain", ["--nan_policy", "ignore"])


def test_hf_training_arguments_are_accepted():
    _, cfg = resolve_train_config(
        "pretrain",
        [
            "--lr_scheduler_type",
            "linear",
            "--warmup_ratio",
            "0.1",
            "--save_total_limit",
            "2",
            "--report_to",
            "none",
            "--deepspeed",
            "ds.json",
            "--max_steps",
            "5",
        ],
    )
    hf = cfg.hf_values()
    assert hf["lr_scheduler_type"] == "linear" and hf["warmup_steps"] == 0.1 and hf["max_steps"] == 5
    assert hf["save_total_limit"] == 2 and hf["deepspeed"] == "ds.json"


def test_swift_and_llamafactory_aliases():
    _, cfg = resolve_train_config(
        "sft",
        [
            "--model_id_or_path",
            "m",
            "--cutoff_len",
            "1024",
            "--dataset_test_ratio",
            "0.1",
            "--default_system",
            "be brief",
            "--sft_type",
            "full",
            "--num_train_epochs",
            "2",
        ],
    )
    assert cfg["model_name_or_path"] == "m" and cfg["max_length"] == 1024 and cfg["val_size"] == 0.1
    assert cfg["system"] == "be brief" and cfg["tuner"] == "full" and cfg["num_train_epochs"] == 2


def test_from_resume_maps_to_latest():
    _, cfg = resolve_train_config("pretrain", ["--from_resume", "1"])
    assert cfg["resume_from_checkpoint"] == "latest"


def _help(*words):
    res = subprocess.run(
        [sys.executable, "-m", "lmforge", *words, "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_train_help_lists_every_flag_with_a_default():
    from lmforge.config.loader import hf_training_specs, specs_of
    from lmforge.config.schema import DataArgs, ModelArgs, RunArgs

    out = _help("train", "pretrain")
    keys = set(hf_training_specs())
    for cls in (ModelArgs, DataArgs, RunArgs):
        keys |= set(specs_of(cls, cls.__name__))
    for key in keys:
        assert re.search(rf"^  --{key}\b.*\[default: ", out, flags=re.M), key
    # stage defaults are what --help shows, and aliases are listed next to their key
    assert re.search(r"--learning_rate .*\[default: 0\.0005\]", out)
    assert "--num_train_epochs (alias: --epochs, --num_epochs)" in out


@pytest.mark.parametrize(
    "words", [("tokenizer", "train"), ("init",), ("data", "synth"), ("chat",), ("infer",)]
)
def test_other_commands_have_help(words):
    out = _help(*words)
    assert "[default: " in out


def test_top_level_help_is_fast_and_lazy():
    code = (
        "import sys, lmforge.cli; lmforge.cli.main(['--help']); print(sorted(m for m in ('torch', "
        "'transformers', 'datasets') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip().endswith("[]"), res.stdout  # no heavy import for --help


def test_unknown_command_suggests():
    res = subprocess.run(
        [sys.executable, "-m", "lmforge", "trian"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and "Did you mean `lmforge train`" in res.stderr


def test_resolve_group_values():
    from lmforge.config.schema import ModelArgs

    cfg = resolve([ModelArgs], ["--hidden_size", "256", "--use_moe", "true"])
    m = cfg.group(ModelArgs)
    assert m.hidden_size == 256 and m.use_moe is True


def test_unavailable_reference_flag_is_accepted_or_refused_in_one_line(monkeypatch):
    from lmforge.config import aliases

    monkeypatch.setitem(aliases.UNAVAILABLE, "some_backend", (("pt",), "needs {value}; install it"))
    _, cfg = resolve_train_config("sft", ["--some_backend", "pt", "--learning_rate", "1e-4"])
    assert cfg["learning_rate"] == 1e-4
    with pytest.raises(LmforgeError, match=r"^command line: --some_backend vllm: needs vllm; install it$"):
        resolve_train_config("sft", ["--some_backend", "vllm"])
