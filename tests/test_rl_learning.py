"""Issue 5's acceptance: grpo, ppo and spo each raise the mean rule reward on held-out prompts.

The task is `data synth`'s one-digit arithmetic (math1_*.jsonl). The held-out rows
(math1_heldout.jsonl) ask 31 of the 155 problems that neither the SFT rows nor the RL prompts ever
contain (lmforge.data.synth.MATH1_HELDOUT), so a gain there is generalisation, not recall. A
0.5M-parameter model SFT-ed on the other problems for 200 steps answers 0.224 of the held-out
samples right at temperature 1 (0.350 of the RL prompts'). Each held-out row is sampled 4 times
with a fixed seed, before and after RL, as the rollouts sample (temperature 1, no top-k/top-p).
"""

import pytest
from known_failures import with_known_failures

from lmforge.data.load import load_rows
from lmforge.data.synth import synth
from lmforge.infer.args import GenerationArgs
from lmforge.infer.engine import Engine
from lmforge.pipeline import run_train
from lmforge.rl.rewards import accuracy

pytestmark = pytest.mark.slow

COMMON = ["--max_length", "32", "--max_gen_len", "12", "--save_steps", "1000", "--logging_steps", "10"]
COMMON += ["--report_to", "none", "--plot", "false"]
SAMPLES_PER_PROMPT = 4


@pytest.fixture(scope="module")
def task(tmp_path_factory, one_thread):
    data = tmp_path_factory.mktemp("math1")
    synth(str(data), seed=0, scale=1.0)
    base = data / "sft"
    run_train(
        "sft",
        ["--preset", "tiny", "--from_weight", "none", "--dataset", str(data / "math1_sft.jsonl")]
        + ["--output_dir", str(base), "--max_length", "32", "--per_device_train_batch_size", "32"]
        + ["--learning_rate", "3e-3", "--max_steps", "200", "--save_steps", "1000", "--plot", "false"]
        + ["--report_to", "none", "--logging_steps", "50"],
    )
    return data, base


def held_out_reward(model_dir, held_out_file) -> float:
    rows, _ = load_rows(str(held_out_file), "prompt")
    prompts = [r["prompt"] for r in rows] * SAMPLES_PER_PROMPT
    answers = list(rows["answer"]) * SAMPLES_PER_PROMPT
    engine = Engine.from_path(str(model_dir), device="cpu")
    gen = GenerationArgs(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=12, seed=0)
    outs = engine.generate_batch(prompts, gen, batch_size=100)
    rewards = accuracy(None, [o.text for o in outs], answer=answers)
    return sum(rewards) / len(rewards)


@pytest.fixture(scope="module")
def base_reward(task):
    data, base = task
    return held_out_reward(base, data / "math1_heldout.jsonl")


# Settings found on this task (measured in the RL issue's note): a 20-40 step warm-up matters, since
# full-rate early updates first raise the entropy; GRPO needs more completions per step than PPO/SPO
# and learns faster here without the KL term (beta 0).
STAGES = {
    "grpo": ["--learning_rate", "3e-4", "--warmup_steps", "30", "--max_steps", "250"]
    + ["--per_device_train_batch_size", "64", "--num_generations", "4", "--beta", "0"],
    "ppo": ["--learning_rate", "1e-3", "--critic_learning_rate", "1e-3", "--warmup_steps", "10"]
    + ["--max_steps", "150", "--per_device_train_batch_size", "32"],
    "spo": ["--learning_rate", "1e-3", "--warmup_steps", "10", "--max_steps", "150"]
    + ["--per_device_train_batch_size", "32"],
}


# Measured on the held-out problems (seeded; base 0.224): every stage raises the accuracy on its own
# RL prompts (0.350 -> GRPO 0.44-0.50, PPO 0.479, SPO 0.501) but none on problems it never saw: GRPO
# 0.169 (with --beta 0.04 and 150 steps: 0.225), PPO 0.198, SPO 0.163. The earlier pass measured recall
# of RL prompts; settings that generalise are still to be found (issue 18). strict: a pass shows up.
NOT_YET = {
    "grpo": "held-out accuracy 0.224 -> 0.169: RL does not yet generalise to unseen problems",
    "ppo": "held-out accuracy 0.224 -> 0.198: RL does not yet generalise to unseen problems",
    "spo": "held-out accuracy 0.224 -> 0.163: RL does not yet generalise to unseen problems",
}


@pytest.mark.parametrize("stage", with_known_failures(STAGES, NOT_YET))
def test_rl_raises_held_out_reward(stage, task, base_reward, tmp_path, one_thread):
    data, base = task
    out = tmp_path / stage
    run_train(
        stage,
        ["--model_name_or_path", str(base), "--dataset", str(data / "math1_rl.jsonl")]
        + ["--output_dir", str(out), *COMMON, *STAGES[stage]],
    )
    after = held_out_reward(out, data / "math1_heldout.jsonl")
    # 800 samples each way: one standard error of the difference is about 0.024; runs are seeded.
    print(f"{stage}: held-out accuracy {base_reward:.3f} -> {after:.3f}")
    assert after >= base_reward + 0.04, f"{stage}: held-out accuracy {base_reward:.3f} -> {after:.3f}"
