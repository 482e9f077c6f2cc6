"""lmforge.rl.rollout on a tiny random model: masks, padding, greedy determinism, log-probs, references."""

import pytest
import torch

from lmforge.models.scratch import init_model
from lmforge.rl.rollout import fill_logprobs, generate, response_mask_from, sequence_logprobs, stop_ids

PROMPTS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is two plus two, please?"},
    ],
    "plain text prompt",
]


@pytest.fixture(scope="module")
def model(tokenizer, one_thread):
    return init_model(tokenizer, preset="tiny", seed=0)


def _prompt_ids(tokenizer, prompt):
    if isinstance(prompt, str):
        text = prompt
    else:
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _responses(rollout):
    return [
        row[m.bool()].tolist()
        for row, m in zip(rollout.response_ids, rollout.response_mask[:, rollout.prompt_length :])
    ]


def test_response_mask_from():
    gen = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]])
    assert response_mask_from(gen, [2]).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert response_mask_from(gen, [6, 2]).tolist()[0] == [1, 1, 0, 0, 0]


def test_stop_ids_default_is_tokenizer_eos(tokenizer, model):
    ids = stop_ids(tokenizer, model)
    assert ids[0] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_ids(tokenizer, model, [11, 11]) == [11]


def test_shapes_masks_and_left_padding(tokenizer, model):
    model.train()
    ro = generate(model, tokenizer, PROMPTS, max_new_tokens=12, temperature=1.0, num_samples=2)
    assert model.training  # mode restored
    lengths = [len(_prompt_ids(tokenizer, p)) for p in PROMPTS]
    assert len(set(lengths)) > 1
    P = ro.prompt_length
    assert P == max(lengths)
    B, L = ro.input_ids.shape
    assert B == 6 and L <= P + 12
    assert ro.attention_mask.shape == ro.response_mask.shape == (B, L)
    assert len(ro.responses) == len(ro.prompts) == B and ro.prompts[0] == ro.prompts[1] != ro.prompts[2]
    for i in range(B):
        n = lengths[i // 2]
        assert ro.input_ids[i, P - n : P].tolist() == _prompt_ids(tokenizer, PROMPTS[i // 2])
        assert ro.attention_mask[i, :P].tolist() == [0] * (P - n) + [1] * n
        assert (ro.input_ids[i, : P - n] == tokenizer.pad_token_id).all()
        assert (ro.response_mask[i, :P] == 0).all()
    resp = ro.response_mask[:, P:]
    # The attention mask over the response is the response mask; both are a prefix of ones.
    assert torch.equal(ro.attention_mask[:, P:], resp)
    assert torch.equal(resp, resp.cummin(dim=1).values)
    assert resp.sum(dim=1).min() >= 1
    assert ro.logprob_mask.shape == (B, L - 1)


def test_masks_end_at_first_stop(tokenizer, model):
    free = generate(model, tokenizer, PROMPTS, max_new_tokens=10, do_sample=False)
    row0 = _responses(free)[0]
    assert len(row0) == 10  # a random tiny model does not emit <|im_end|> by itself
    stop = row0[4]
    ro = generate(model, tokenizer, PROMPTS, max_new_tokens=10, do_sample=False, stop_token_ids=[stop])
    for full, got, m, ids in zip(
        _responses(free), _responses(ro), ro.response_mask[:, ro.prompt_length :], ro.response_ids
    ):
        # Greedy prefixes agree; each response ends right after its first stop token.
        cut = full.index(stop) + 1 if stop in full else len(full)
        assert got == full[:cut]
        assert m.sum().item() == cut
        assert (ids[cut:] == tokenizer.pad_token_id).all()
    assert ro.responses[0] == tokenizer.decode(row0[: row0.index(stop) + 1], skip_special_tokens=True)


def test_masks_end_at_first_eos(tokenizer, model):
    eos = tokenizer.eos_token_id
    # Raise <|im_end|>'s logit so sampled responses end at different lengths.
    handle = model.get_output_embeddings().register_forward_hook(
        lambda m, i, out: out.index_add(-1, torch.tensor([eos]), torch.full((*out.shape[:-1], 1), 7.5))
    )
    try:
        torch.manual_seed(0)
        ro = generate(model, tokenizer, PROMPTS * 3, max_new_tokens=10, temperature=1.0)
    finally:
        handle.remove()
    gen, mask = ro.response_ids, ro.response_mask[:, ro.prompt_length :]
    lengths = mask.sum(dim=1).tolist()
    assert len(set(lengths)) > 1 and min(lengths) < 10
    for ids, m, n, text in zip(gen, mask, lengths, ro.responses):
        hits = (ids[:n] == eos).nonzero().flatten().tolist()
        assert hits in ([n - 1], []) and (hits or n == gen.shape[1])  # stops at its first eos, or runs out
        assert (ids[n:] == tokenizer.pad_token_id).all() and (m[n:] == 0).all()
        assert (
            text == tokenizer.decode(ids[:n].tolist(), skip_special_tokens=True) and "<|im_end|>" not in text
        )


def test_greedy_batch_equals_single(tokenizer, model):
    batch = generate(model, tokenizer, PROMPTS, max_new_tokens=8, do_sample=False)
    assert batch.temperature == 1.0
    for i, prompt in enumerate(PROMPTS):
        alone = generate(model, tokenizer, [prompt], max_new_tokens=8, do_sample=False)
        assert _responses(alone)[0] == _responses(batch)[i]
        assert alone.responses[0] == batch.responses[i]


def test_greedy_rollout_equals_plain_transformers_generate(tokenizer, model):
    """Rollouts decode with lmforge's loop (lmforge/decode/); greedy, they give transformers' tokens."""
    stops = stop_ids(tokenizer, model)
    ro = generate(model, tokenizer, PROMPTS, max_new_tokens=9, do_sample=False)
    for prompt, ours in zip(PROMPTS, _responses(ro)):
        ids = torch.tensor([_prompt_ids(tokenizer, prompt)])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=9,
                eos_token_id=stops,
                pad_token_id=stops[0],
            )[0, ids.shape[1] :].tolist()
        ends = [i for i, t in enumerate(out) if t in stops]
        assert ours == (out[: ends[0] + 1] if ends else out)


def test_sequence_logprobs_left_padding_invariant(tokenizer, model):
    ro = generate(model, tokenizer, PROMPTS, max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        padded = sequence_logprobs(model, ro.input_ids, ro.attention_mask, temperature=0.7)
    for i in range(len(ro)):
        keep = ro.attention_mask[i].bool()
        ids = ro.input_ids[i][keep][None]
        with torch.no_grad():
            alone = sequence_logprobs(model, ids, torch.ones_like(ids), temperature=0.7)
        # Column j predicts token j + 1: the real tokens sit at first .. first + n − 1.
        first, n = int(keep.nonzero()[0]), int(keep.sum())
        torch.testing.assert_close(padded[i, first : first + n - 1], alone[0], atol=1e-5, rtol=0)
    assert (padded[~ro.attention_mask[:, 1:].bool()] == 0).all()
    # Differentiable outside no_grad.
    assert sequence_logprobs(model, ro.input_ids[:1], ro.attention_mask[:1]).requires_grad


def test_fill_logprobs_matches_sequence_logprobs(tokenizer, model):
    torch.manual_seed(0)
    ro = generate(model, tokenizer, PROMPTS, max_new_tokens=7, temperature=0.8, num_samples=2)
    assert ro.temperature == 0.8
    fill_logprobs(ro, model, batch_size=4)
    assert ro.ref_logprobs is None  # no reference: plain model, no adapter
    with torch.no_grad():
        full = sequence_logprobs(model, ro.input_ids, ro.attention_mask, temperature=0.8)
    m = ro.logprob_mask.bool()
    assert ro.old_logprobs.shape == full.shape == m.shape
    torch.testing.assert_close(ro.old_logprobs[m], full[m], atol=1e-5, rtol=0)
    assert (ro.old_logprobs[~m] == 0).all() and (ro.old_logprobs[m] < 0).all()
    fill_logprobs(ro, model, ref=model)
    torch.testing.assert_close(ro.ref_logprobs, ro.old_logprobs, atol=1e-6, rtol=0)


def test_peft_disabled_adapter_is_the_base_model(tokenizer, model):
    from peft import LoraConfig, get_peft_model

    base = init_model(tokenizer, preset="tiny", seed=0)
    policy = get_peft_model(
        init_model(tokenizer, preset="tiny", seed=0), LoraConfig(r=4, target_modules="all-linear")
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    ro = generate(policy, tokenizer, PROMPTS, max_new_tokens=6, temperature=1.0)
    fill_logprobs(ro, policy)
    with torch.no_grad():
        expected = sequence_logprobs(base, ro.input_ids, ro.attention_mask) * ro.logprob_mask
    torch.testing.assert_close(ro.ref_logprobs, expected, atol=1e-5, rtol=0)
    assert (ro.old_logprobs - ro.ref_logprobs).abs().max() > 1e-3  # the adapter does change the policy
    # The same through an explicit context-manager factory; and opting out gives no reference.
    fill_logprobs(ro, policy, ref_context=policy.disable_adapter)
    torch.testing.assert_close(ro.ref_logprobs, expected, atol=1e-5, rtol=0)
    assert fill_logprobs(ro, policy, use_adapter_disabled=False).ref_logprobs is None
