"""GRPO through the real pipeline: rule rewards logged per step, reward weights, reasoning format
reward, and one-line errors. (Whether RL raises held-out reward is tested with the RL acceptance.)"""

import json
import math
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from lmforge.errors import LmforgeError
from lmforge.pipeline import run_train

QUIET = ["--report_to", "none", "--dataloader_num_workers", "0", "--plot", "false", "--save_steps", "1000"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    from lmforge.models.scratch import init_model

    out = tmp_path_factory.mktemp("grpo") / "base"
    init_model(tokenizer, preset="tiny", seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _grpo(base, data, out, *extra):
    return run_train(
        "grpo",
        [
            "--model_name_or_path", str(base), "--dataset", str(data), "--output_dir", str(out),
            "--max_steps", "3", "--per_device_train_batch_size", "8", "--num_generations", "4",
            "--max_gen_len", "12", "--learning_rate", "1e-4", "--max_length", "64", *QUIET, *extra,
        ],
    )  # fmt: skip


def test_grpo_runs_with_weighted_rule_rewards(base, synth_dir, tmp_path, one_thread):
    run_dir = Path(
        _grpo(
            base,
            synth_dir / "rlaif.jsonl",
            tmp_path / "g",
            "--reasoning",
            "1",
            "--reward_funcs",
            "accuracy,repetition",
            "--reward_weights",
            "1,0.1,0.5",
        )  # fmt: skip
    )
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(math.isfinite(r["loss"]) for r in records)
    for key in ("rewards/accuracy/mean", "rewards/repetition/mean", "rewards/format/mean", "reward"):
        assert key in records[-1], key
    r = records[-1]
    expected = (
        r["rewards/accuracy/mean"] + 0.1 * r["rewards/repetition/mean"] + 0.5 * r["rewards/format/mean"]
    )
    assert abs(r["reward"] - expected) < 1e-5
    AutoModelForCausalLM.from_pretrained(run_dir)
    assert (run_dir / "lmforge_finished.json").is_file()


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--num_generations", "3"], "must be >= 2 and divide"),
        (["--reward_funcs", "accuracy,bogus"], "bogus"),
        (["--reward_weights", "1,2"], "weights"),
    ],
)
def test_grpo_flag_errors(flags, needle, base, synth_dir, tmp_path):
    with pytest.raises(LmforgeError, match=needle):
        _grpo(base, synth_dir / "rlaif.jsonl", tmp_path / "bad", *flags)


def test_minimind_grpo_flags_resolve():
    from lmforge.pipeline import resolve_train_config

    _, cfg = resolve_train_config(
        "grpo", ["--batch_size", "2", "--num_generations", "8", "--beta", "0.02", "--max_gen_len", "256",
                 "--reasoning", "1", "--reward_model_path", "out/rm", "--max_seq_len", "66"]
    )  # fmt: skip
    # MiniMind's --batch_size counts prompts: 2 prompts x 8 generations = 16 completions per step
    assert cfg["per_device_train_batch_size"] == 16 and cfg["max_gen_len"] == 256 and cfg["reasoning"] is True
    assert cfg["reward_model_path"] == "out/rm" and cfg["max_length"] == 66
