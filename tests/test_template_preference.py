"""Preference / KTO / reward rows through lmforge's renderer in a template without a system role
(Gemma style): TRL's tokenisation is routed through `data.chat.render`, the prompt ids are the
inference prompt's, and a DPO / KTO step trains on them."""

from __future__ import annotations

import json

import pytest
from chat_tokenizers import make_tokenizer

from lmforge.data.chat import encode_completion, encode_prompt
from lmforge.data.chat_templates import TEMPLATES

PROMPT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
CHOSEN = [{"role": "assistant", "content": "The capital of France is Paris."}]
REJECTED = [{"role": "assistant", "content": "London."}]


@pytest.mark.parametrize("module_name", ["dpo_trainer", "kto_trainer", "reward_trainer"])
def test_trl_tokenisation_uses_lmforge_renderer(module_name):
    import importlib

    from lmforge.training.preference import lmforge_rendering

    module = importlib.import_module(f"trl.trainer.{module_name}")
    tok = make_tokenizer("bpe", "gemma", TEMPLATES["gemma"])
    with pytest.raises(Exception, match="System role not supported"):
        module._tokenize(tok, PROMPT, add_generation_prompt=True)  # TRL alone cannot render it
    with lmforge_rendering(module):
        prompt_ids = module._tokenize(tok, PROMPT, add_generation_prompt=True)["input_ids"]
        full_ids = module._tokenize(tok, PROMPT + CHOSEN)["input_ids"]
    assert prompt_ids == encode_prompt(tok, PROMPT)
    p, c = encode_completion(tok, PROMPT, CHOSEN)
    assert full_ids == p + c and full_ids[: len(prompt_ids)] == prompt_ids
    assert module._tokenize.__module__.startswith("trl")  # restored afterwards


@pytest.mark.parametrize("stage", ["dpo", "kto", "orpo"])
def test_preference_step_in_a_template_without_system_role(stage, tmp_path, one_thread):
    from lmforge.models.scratch import init_model
    from lmforge.pipeline import run_train

    tok = make_tokenizer("bpe", "gemma", TEMPLATES["gemma"])
    base = tmp_path / "base"
    init_model(tok, preset="tiny", seed=0, max_position_embeddings=256).save_pretrained(base)
    tok.save_pretrained(base)
    data = tmp_path / "pref.jsonl"
    if stage == "kto":
        rows = [
            {"prompt": PROMPT, "completion": side, "label": good}
            for side, good in ((CHOSEN, True), (REJECTED, False))
        ]
    else:
        rows = [{"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}] * 2
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    run = run_train(
        stage,
        [
            "--model_name_or_path", str(base), "--dataset", str(data), "--output_dir", str(tmp_path / "run"),
            "--max_steps", "1", "--max_length", "128", "--per_device_train_batch_size", "2",
            "--report_to", "none", "--plot", "false",
        ],
    )  # fmt: skip
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert run and any("loss" in r for r in records)


def test_rl_prompts_are_folded_and_end_with_the_generation_prompt():
    from types import SimpleNamespace

    import datasets

    from lmforge.data.chat import render
    from lmforge.training.rl import drop_long_prompts

    tok = make_tokenizer("bpe", "gemma", TEMPLATES["gemma"])
    rows = datasets.Dataset.from_list([{"prompt": PROMPT}, {"prompt": [PROMPT[1]] * 40}])
    ctx = SimpleNamespace(
        tokenizer=tok, cfg={"max_length": 64, "enable_thinking": True, "dataset": "d"}, stats={}
    )
    kept = drop_long_prompts(ctx, rows)
    assert len(kept) == 1 and ctx.stats["prompts_too_long"] == 1
    prompt = kept[0]["prompt"]
    assert [m["role"] for m in prompt] == ["user"] and prompt[0]["content"].startswith(PROMPT[0]["content"])
    # what TRL renders from the kept prompt is lmforge's inference prompt
    text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert text == render(tok, PROMPT, add_generation_prompt=True) and text.endswith("<start_of_turn>model\n")
