"""Reward functions for the RL stages: rule rewards, the reward-model scorer, flag parsing, combining."""

import inspect
import math

import pytest

from lmforge.errors import LmforgeError
from lmforge.rl.rewards import (
    RewardModelScorer,
    accuracy,
    build_reward_funcs,
    combine,
    format_reward,
    length,
    repetition,
)

THINK = "<think>\nI need to add 14 and 13. So 14 + 13 = 27.\n</think>\n"


def conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("14 + 13 = 27.", "27", 1.0),
        ("0 + 9 = 9。", "9", 1.0),
        ("计算结果：12 - 5 = 7。", "7", 1.0),
        (THINK + "<answer>\n14 + 13 = 27.\n</answer>", "27", 1.0),
        (THINK + "<answer>\n26\n</answer>", "27", 0.0),  # the trace's number does not count
        ("<think>\nmaybe 27\n</think>\nThe answer is 28.", "27", 0.0),
        ("14 + 13 = 26.", "27", 0.0),
        ("3 - 10 = -7.", "-7", 1.0),
        ("3 - 10 = 7.", "-7", 0.0),
        ("Half of 1.5 is 0.75", "3/4", 1.0),
        ("The share is 3/4.", "0.75", 1.0),
        ("That makes 1,000 apples.", "1000", 1.0),
        ("x = 2.5000001", "2.5", 1.0),
        ("x = 2.51", "2.5", 0.0),
        ("I do not know.", "27", 0.0),
        ("27", None, 0.0),
        ("27", "", 0.0),
        ("27", "14 + 13 = 27.", 1.0),  # a sentence reference: its final number
        ("Paris.", "paris", 1.0),  # non-numeric: normalised text
        ("<answer>巴黎。</answer>", "巴黎", 1.0),
        ("The capital is Paris.", "Paris", 0.0),
        ("<think>\nstill thinking about 27", "27", 0.0),  # unclosed think: no answer yet
        ("It is 8.", "7\n8", 1.0),  # several reference lines: any one
    ],
)
def test_accuracy(completion, answer, expected):
    assert accuracy([""], [completion], answer=[answer]) == [expected]
    assert accuracy([[{"role": "user", "content": "q"}]], [conv(completion)], answer=[answer]) == [expected]


def test_accuracy_needs_an_answer_column():
    with pytest.raises(LmforgeError, match="answer"):
        accuracy([""], ["27"])
    assert accuracy([""], ["27"], solution=["27"]) == [1.0]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>\nreasoning\n</think>\nThe answer is 4.", 1.0),
        ("<think>\nreasoning\n</think>\n\n<answer>\n4\n</answer>", 1.0),
        ("\n<think>reasoning</think>4", 1.0),
        ("<think>\nreasoning\nThe answer is 4.", 0.5),  # missing close tag
        ("Sure. <think>\nreasoning\n</think>\n4", 0.5),  # text before think
        ("<think>\nreasoning\n</think>\n", 0.5),  # empty answer
        ("<think>\nreasoning\n</think>\n<answer>\n\n</answer>", 0.5),  # empty answer wrapper
        ("<think>\n\n</think>\n4", 0.5),  # empty reasoning
        ("<think>a</think><think>b</think>4", 0.5),  # two blocks
        ("</think>4", 0.5),
        ("The answer is 4.", 0.0),
        ("<answer>4</answer>", 0.0),
    ],
)
def test_format(completion, expected):
    assert format_reward([""], [completion]) == [expected]
    assert format_reward([[]], [conv(completion)]) == [expected]


def test_format_reads_reasoning_content():
    message = {"role": "assistant", "content": "4", "reasoning_content": "2 + 2"}
    assert format_reward([[]], [[message]]) == [1.0]


def test_length():
    reward = length(10)
    assert reward.__name__ == "length"
    texts = ["x" * 10, "x" * 5, "x" * 15, "x" * 20, "x" * 100, ""]
    assert reward(None, texts) == [1.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    assert reward(None, [conv("x" * 8)]) == [pytest.approx(0.8)]
    with pytest.raises(LmforgeError):
        length(0)


def test_repetition():
    texts = [
        "the cat sat on the mat",  # no repeated trigram
        "the cat the cat the cat",  # 4 trigrams, 2 distinct
        "Go go go!",  # one trigram
        "a b",  # too short
        "你好你好你好",  # 4 character trigrams, 2 distinct
        "同一句话同一句话",  # 6 trigrams, 4 distinct
        "ok ok ok ok ok ok ok ok ok ok ok",  # 9 identical trigrams
    ]
    got = repetition(None, texts)
    assert got == pytest.approx([0.0, -0.5, 0.0, 0.0, -0.5, -1 / 3, -8 / 9])
    assert all(-1.0 <= r <= 0.0 for r in got)
    assert repetition(None, [conv("the cat the cat the cat")]) == [-0.5]


def test_names():
    funcs, _ = build_reward_funcs(
        "accuracy,format,length,repetition", None, reasoning=False, reward_model=None
    )
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "length", "repetition"]


def test_build_reward_funcs():
    funcs, weights = build_reward_funcs(None, None, reasoning=False, reward_model=None)
    assert funcs == [accuracy] and weights == [1.0]
    funcs, weights = build_reward_funcs("accuracy, Format", "1,0.5", reasoning=True, reward_model=None)
    assert funcs == [accuracy, format_reward] and weights == [1.0, 0.5]
    funcs, weights = build_reward_funcs("accuracy", "2,0.5", reasoning=True, reward_model=None)
    assert [f.__name__ for f in funcs] == ["accuracy", "format"] and weights == [2.0, 0.5]
    funcs, _ = build_reward_funcs("length", None, reasoning=False, reward_model=None, length_target=50)
    assert funcs[0].target == 50
    funcs, _ = build_reward_funcs("none", None, reasoning=True, reward_model=None)
    assert funcs == [format_reward]


@pytest.mark.parametrize(
    "names, weights, reasoning, match",
    [
        (
            "accuracy,bleu",
            None,
            False,
            "unknown reward 'bleu'; valid: accuracy, closeness, format, length, repetition",
        ),
        ("accuracy", "1,2", False, r"2 value\(s\) for 1 reward\(s\) \(accuracy\)"),
        ("accuracy", "1", True, r"1 value\(s\) for 2 reward\(s\) \(accuracy, format\)"),
        ("accuracy", "one", False, "comma-separated numbers"),
        ("accuracy,accuracy", None, False, "twice"),
        ("none", None, False, "no rewards"),
    ],
)
def test_build_reward_funcs_errors(names, weights, reasoning, match):
    with pytest.raises(LmforgeError, match=match) as err:
        build_reward_funcs(names, weights, reasoning=reasoning, reward_model=None)
    assert "\n" not in str(err.value)


def test_bad_reward_model_path(tmp_path):
    with pytest.raises(LmforgeError, match="not a model folder"):
        build_reward_funcs("accuracy", None, reasoning=False, reward_model=str(tmp_path))


def test_combine():
    assert combine([[1.0, 0.0, None], [0.5, None, 2.0]], [1.0, 2.0]) == [2.0, 0.0, 4.0]
    assert combine([[1.0, math.nan]], [3.0]) == [3.0, 0.0]
    with pytest.raises(ValueError):
        combine([[1.0]], [1.0, 2.0])
    with pytest.raises(ValueError):
        combine([[1.0], [1.0, 2.0]], [1.0, 1.0])


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tokenizer):
    from transformers import AutoModelForSequenceClassification

    from lmforge.models.scratch import init_model

    path = tmp_path_factory.mktemp("rm")
    init_model(tokenizer, preset="tiny", seed=0).save_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


PROMPTS = [
    [{"role": "user", "content": "What is 14 + 13?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好！"}],
    [{"role": "user", "content": "Who are you?"}],
]
ANSWERS = [
    "14 + 13 = 27.",
    "你好！有什么可以帮你的吗？",
    "I am a small language model trained with lmforge, and I like it.",
]


def test_reward_model_scorer(rm_dir, tokenizer, one_thread):
    scorer = RewardModelScorer(rm_dir, clip=None, batch_size=2)
    assert scorer.__name__ == "reward_model"
    completions = [conv(a) for a in ANSWERS]
    scores = scorer(PROMPTS, completions)
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    assert scorer(PROMPTS, completions) == scores  # deterministic
    one_by_one = [scorer([p], [c])[0] for p, c in zip(PROMPTS, completions)]
    assert one_by_one == pytest.approx(scores, abs=1e-5)
    assert scorer(PROMPTS, ANSWERS) == pytest.approx(scores, abs=1e-5)  # string completions, chat prompts
    text = scorer(["Q: What is 14 + 13?\nA: "] * 3, ANSWERS)  # plain text prompts and completions
    assert all(math.isfinite(s) for s in text)
    assert text == pytest.approx(
        [scorer([p], [a])[0] for p, a in zip(["Q: What is 14 + 13?\nA: "] * 3, ANSWERS)]
    )
    tiny = RewardModelScorer(scorer.model, tokenizer, clip=1e-3)(PROMPTS, completions)
    assert all(abs(s) <= 1e-3 for s in tiny)
    assert tiny == pytest.approx([max(-1e-3, min(1e-3, s)) for s in scores])


def test_build_with_reward_model(rm_dir, tokenizer, one_thread):
    funcs, weights = build_reward_funcs(
        "accuracy", "1,0.1", reasoning=False, reward_model=rm_dir, tokenizer=tokenizer, clip=2.0
    )
    assert [f.__name__ for f in funcs] == ["accuracy", "reward_model"] and weights == [1.0, 0.1]
    assert funcs[1].clip == 2.0
    with pytest.raises(LmforgeError, match=r"1 value\(s\) for 2 reward\(s\) \(accuracy, reward_model\)"):
        build_reward_funcs("accuracy", "1", reasoning=False, reward_model=rm_dir)


def test_called_like_grpo_trainer(rm_dir, tokenizer, one_thread):
    """Mirror GRPOTrainer._calculate_rewards: dataset columns (except prompt/completion/completion_ids)
    as aligned lists, plus trainer_state, log_extra, log_metric and completion_ids."""
    from trl import GRPOTrainer
    from trl.trainer.utils import get_callable_name

    source = inspect.getsource(GRPOTrainer._calculate_rewards)
    assert "prompts=prompts, completions=completions, completion_ids=completion_ids_list" in source
    assert all(f'reward_kwargs["{k}"]' in source for k in ("trainer_state", "log_extra", "log_metric"))

    inputs = [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, ["27", "你好", None])]
    completions = [conv(THINK + "<answer>\n27\n</answer>"), conv("你好"), conv("I am lmforge.")]
    keys = [k for k in inputs[0] if k not in ("prompt", "completion", "completion_ids")]
    reward_kwargs = {k: [x[k] for x in inputs] for k in keys}
    reward_kwargs.update(trainer_state=object(), log_extra=lambda *a: None, log_metric=lambda *a: None)
    prompts = [x["prompt"] for x in inputs]
    completion_ids = [tokenizer(c[0]["content"], add_special_tokens=False)["input_ids"] for c in completions]

    funcs, weights = build_reward_funcs(
        "accuracy,length,repetition", None, reasoning=True, reward_model=rm_dir, tokenizer=tokenizer
    )
    names = [get_callable_name(f) for f in funcs]
    assert names == ["accuracy", "length", "repetition", "format", "reward_model"]
    outputs = [
        f(prompts=prompts, completions=completions, completion_ids=completion_ids, **reward_kwargs)
        for f in funcs
    ]
    assert all(len(o) == 3 and all(isinstance(r, float) for r in o) for o in outputs)
    assert outputs[0] == [1.0, 1.0, 0.0] and outputs[3] == [1.0, 0.0, 0.0]
    assert len(combine(outputs, weights)) == 3


def test_closeness_is_dense_around_the_numeric_answer():
    from lmforge.rl.rewards import closeness

    got = closeness(
        None,
        [
            "14 + 13 = 27.",
            "14 + 13 = 28.",
            "14 + 13 = 30.",
            "no number",
            [{"role": "assistant", "content": "0 + 9 = 9。"}],
        ],
        answer=["27", "27", "27", "27", "9"],
    )
    assert got == [1.0, 0.5, 0.25, 0.0, 1.0]
