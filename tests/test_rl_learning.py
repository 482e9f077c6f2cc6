"""Issue 5's acceptance, re-tuned in issue 18: grpo, ppo and spo each raise the rule reward on
held-out prompts, by a skill that transfers rather than by recall.

The task is `data synth`'s "last number" (last_*.jsonl): "What is the last number in 3 7 1 4?",
answered "4.". The held-out rows (last_heldout.jsonl) use 2,000 of the 10,000 digit sequences that
neither the SFT rows nor the RL prompts ever contain (lmforge.data.synth.LAST_HELDOUT), so a gain
there is the copying rule, not a remembered answer. The SFT rows are noisy demonstrations (35% give
the last digit, the others the first); a 0.5M-parameter model SFT-ed on them for 150 steps has the
answer format but not the rule: 0.125 of the held-out samples right at temperature 1, about chance.
The `accuracy` reward is the only teacher of the rule. Each of 100 held-out rows is sampled 4 times
with a fixed seed, before and after RL, as the rollouts sample (temperature 1, no top-k/top-p).
"""

import pytest

from lmforge.data.load import load_rows
from lmforge.data.synth import synth
from lmforge.infer.args import GenerationArgs
from lmforge.infer.engine import Engine
from lmforge.pipeline import run_train
from lmforge.rl.rewards import accuracy

pytestmark = pytest.mark.slow

COMMON = ["--max_length", "32", "--max_gen_len", "4", "--save_steps", "1000", "--logging_steps", "10"]
COMMON += ["--report_to", "none", "--plot", "false", "--warmup_steps", "5", "--max_steps", "40"]
COMMON += ["--learning_rate", "1e-3", "--per_device_train_batch_size", "32"]
HELD_OUT_ROWS, SAMPLES_PER_PROMPT = 100, 4


@pytest.fixture(scope="module")
def task(tmp_path_factory, one_thread):
    data = tmp_path_factory.mktemp("last")
    synth(str(data), seed=0, scale=1.0)
    base = data / "sft"
    run_train(
        "sft",
        ["--preset", "tiny", "--from_weight", "none", "--dataset", str(data / "last_sft.jsonl")]
        + ["--output_dir", str(base), "--max_length", "32", "--per_device_train_batch_size", "32"]
        + ["--learning_rate", "3e-3", "--max_steps", "150", "--save_steps", "1000", "--plot", "false"]
        + ["--report_to", "none", "--logging_steps", "50"],
    )
    return data, base


def held_out_reward(model_dir, held_out_file) -> float:
    rows, _ = load_rows(str(held_out_file), "prompt")
    rows = rows.select(range(HELD_OUT_ROWS))
    prompts = [r["prompt"] for r in rows] * SAMPLES_PER_PROMPT
    answers = list(rows["answer"]) * SAMPLES_PER_PROMPT
    engine = Engine.from_path(str(model_dir), device="cpu")
    gen = GenerationArgs(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4, seed=0)
    outs = engine.generate_batch(prompts, gen, batch_size=100)
    rewards = accuracy(None, [o.text for o in outs], answer=answers)
    return sum(rewards) / len(rewards)


@pytest.fixture(scope="module")
def base_reward(task):
    data, base = task
    return held_out_reward(base, data / "last_heldout.jsonl")


# Every stage: 40 steps of 32 completions, lr 1e-3 after 5 warm-up steps; GRPO samples 8 prompts x 4
# and runs without the KL term (beta 0).
STAGES = {
    "grpo": ["--num_generations", "4", "--beta", "0"],
    "ppo": ["--critic_learning_rate", "1e-3"],
    "spo": [],
}


@pytest.mark.parametrize("stage", STAGES)
def test_rl_raises_held_out_reward(stage, task, base_reward, tmp_path, one_thread):
    data, base = task
    out = tmp_path / stage
    run_train(
        stage,
        ["--model_name_or_path", str(base), "--dataset", str(data / "last_rl.jsonl")]
        + ["--output_dir", str(out), *COMMON, *STAGES[stage]],
    )
    after = held_out_reward(out, data / "last_heldout.jsonl")
    # Measured (seeded): 0.125 -> GRPO 0.410, PPO 0.443, SPO 0.532. A trainer that does not learn
    # stays at 0.125 (lr 0: the same weights, the same seeded samples); with the rewards negated
    # (--reward_weights -1) GRPO falls to 0.110, PPO to 0.090, SPO to 0.013. 400 samples each way: one standard error of the
    # difference is about 0.03, the bar (+0.15) is 5 of them; runs are seeded.
    print(f"{stage}: held-out accuracy {base_reward:.3f} -> {after:.3f}")
    assert after >= base_reward + 0.15, f"{stage}: held-out accuracy {base_reward:.3f} -> {after:.3f}"
