"""lmforge.rl.ppo_math: GAE, token rewards, KL estimators, clipped losses, whitening, ValueTracker."""

import json
import math

import pytest
import torch

from lmforge.rl.ppo_math import (
    ValueTracker,
    entropy_from_logits,
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    policy_loss,
    prompt_key,
    token_rewards,
    value_loss,
)

T = torch.tensor


def test_gae_single_row_by_hand():
    gamma, lam = 0.9, 0.8
    r, v = [0.1, -0.2, 0.0, 1.0], [0.5, 0.4, 0.3, 0.2]
    # δ_t = r_t + γ V_{t+1} − V_t (V_4 = 0); A_t = δ_t + γλ A_{t+1}
    d3 = r[3] + gamma * 0.0 - v[3]
    d2 = r[2] + gamma * v[3] - v[2]
    d1 = r[1] + gamma * v[2] - v[1]
    d0 = r[0] + gamma * v[1] - v[0]
    a3 = d3
    a2 = d2 + gamma * lam * a3
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    assert (a3, round(a2, 6), round(a1, 6)) == (0.8, 0.456, -0.00168)
    adv, ret = gae(T([r]), T([v]), torch.ones(1, 4), gamma, lam)
    torch.testing.assert_close(adv, T([[a0, a1, a2, a3]]))
    torch.testing.assert_close(ret, T([[a0 + v[0], a1 + v[1], a2 + v[2], a3 + v[3]]]))


def test_gae_padded_rows_ignore_masked_positions():
    gamma, lam = 0.9, 0.8
    # Row 0: full 4-token response. Row 1: prompt position, 2 response tokens, right padding; the
    # masked slots hold garbage that must not leak in.
    rewards = T([[0.1, -0.2, 0.0, 1.0], [9.0, 0.5, 2.0, 9.0]])
    values = T([[0.5, 0.4, 0.3, 0.2], [9.0, 1.0, 0.5, 9.0]])
    mask = T([[1, 1, 1, 1], [0, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    d2 = 2.0 - 0.5  # last response token: bootstrap 0
    d1 = 0.5 + gamma * 0.5 - 1.0
    a2, a1 = d2, d1 + gamma * lam * d2
    torch.testing.assert_close(adv[1], T([0.0, a1, a2, 0.0]))
    torch.testing.assert_close(ret[1], T([0.0, a1 + 1.0, a2 + 0.5, 0.0]))
    alone, _ = gae(rewards[:1], values[:1], mask[:1], gamma, lam)
    torch.testing.assert_close(adv[0], alone[0])
    # lam = 1, gamma = 1: the advantage is the rest-of-episode reward sum minus the value.
    adv1, ret1 = gae(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(ret1[1], T([0.0, 2.5, 2.0, 0.0]))
    torch.testing.assert_close(adv1[1], T([0.0, 1.5, 1.5, 0.0]))


def test_token_rewards_placement():
    kl = T([[0.1, 0.2, 0.3, 5.0], [7.0, 0.4, -0.2, 7.0]])
    mask = T([[1, 1, 1, 0], [0, 1, 1, 0]])
    out = token_rewards(T([1.0, 2.0]), kl, mask, kl_coef=0.1)
    torch.testing.assert_close(out, T([[-0.01, -0.02, -0.03 + 1.0, 0.0], [0.0, -0.04, 0.02 + 2.0, 0.0]]))
    # An empty row gets nothing, not the score at column 0.
    empty = token_rewards(T([3.0]), torch.zeros(1, 3), torch.zeros(1, 3), kl_coef=0.1)
    assert empty.abs().sum() == 0


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_zero_when_equal(kind):
    logp = torch.log_softmax(torch.randn(3, 5, 7), dim=-1)[..., 0]
    assert torch.equal(kl_estimate(logp, logp.clone(), kind), torch.zeros_like(logp))


def test_kl_values_and_k3_nonnegative():
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(4, 9, generator=g) * 5, -torch.rand(4, 9, generator=g) * 5
    d = logp - ref
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), d)
    torch.testing.assert_close(kl_estimate(logp, ref, "k2"), 0.5 * d**2)
    k3 = kl_estimate(logp, ref, "k3")
    torch.testing.assert_close(k3, torch.exp(ref - logp) - (ref - logp) - 1)
    assert (k3 >= 0).all()
    mask = torch.zeros(4, 9)
    mask[:, :3] = 1
    assert kl_estimate(logp, ref, "k3", mask)[:, 3:].abs().sum() == 0
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k4")


def test_policy_loss_formula_and_clip_fraction():
    eps = 0.2
    ratio = T([[1.5, 0.9, 1.05, 0.5, 1.5, 100.0]])
    adv = T([[1.0, -1.0, 2.0, -1.0, -1.0, 3.0]])
    mask = T([[1, 1, 1, 1, 1, 0]])  # the last slot (huge ratio) is padding
    old = torch.full_like(ratio, -2.0)
    logp = (old + ratio.log()).requires_grad_()
    loss, stats = policy_loss(logp, old, adv, mask, eps)
    # per token max(−A ρ, −A clip(ρ)): 1.5·+1 → clipped −1.2; 0.9·−1 → 0.9 (inside); 1.05·+2 → −2.1;
    # 0.5·−1 → clipped 0.8; 1.5·−1 → 1.5 (outside the range but the unclipped term wins).
    expected = [-1.2, 0.9, -2.1, 0.8, 1.5]
    assert loss.item() == pytest.approx(sum(expected) / 5, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(2 / 5)
    r = ratio[0, :5]
    assert stats["ratio"] == pytest.approx(r.mean().item(), abs=1e-6)
    assert stats["approx_kl"] == pytest.approx(((r - 1) - r.log()).mean().item(), abs=1e-6)
    loss.backward()
    # Clipped tokens carry no gradient; unclipped ones −A·ρ / n.
    torch.testing.assert_close(logp.grad, T([[0.0, 0.9 / 5, -2.1 / 5, 0.0, 1.5 / 5, 0.0]]))


def test_policy_loss_on_policy_has_no_clipping():
    logp = torch.randn(2, 6)
    adv = torch.randn(2, 6)
    mask = torch.ones(2, 6)
    loss, stats = policy_loss(logp, logp.clone(), adv, mask, 0.1)
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-6)
    assert stats == {"clip_fraction": 0.0, "approx_kl": 0.0, "ratio": 1.0}


def test_value_loss_formula():
    values = T([[1.0, 1.0, 0.5, 42.0]])
    old = T([[0.5, 0.0, 0.5, 0.0]])
    returns = T([[0.0, 1.0, 0.5, 0.0]])
    mask = T([[1, 1, 1, 0]])
    loss, stats = value_loss(values, old, returns, mask, 0.2)
    # token 0: max(1, (0.7−0)²) = 1; token 1: max(0, (0.2−1)²) = 0.64 (clip active); token 2: 0.
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.64 + 0.0) / 3, abs=1e-6)
    assert stats["value_clip_fraction"] == pytest.approx(1 / 3)
    assert stats["value_mean"] == pytest.approx(2.5 / 3)


def test_masked_mean_and_whiten():
    x = torch.randn(4, 10) * 3 + 5
    x[:, 7:] = float("nan")  # garbage in masked slots
    mask = torch.ones(4, 10)
    mask[:, 7:] = 0
    mask[2, 5:] = 0
    sel = x[mask.bool()]
    assert masked_mean(x, mask).item() == pytest.approx(sel.mean().item(), abs=1e-5)
    torch.testing.assert_close(masked_mean(x, mask, dim=1)[0], x[0, :7].mean())
    w = masked_whiten(x, mask)
    ws = w[mask.bool()]
    assert ws.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert ws.std().item() == pytest.approx(1.0, abs=1e-4)
    assert not w.isnan().any() and (w[~mask.bool()] == 0).all()
    kept = masked_whiten(x, mask, shift_mean=False)[mask.bool()]
    assert kept.mean().item() == pytest.approx(sel.mean().item(), abs=1e-4)


def test_entropy_from_logits():
    logits = torch.zeros(2, 3, 8)
    logits[1, 2] = torch.tensor([100.0] + [0.0] * 7)  # nearly one-hot, masked out below
    mask = T([[1, 1, 1], [1, 1, 0]])
    assert entropy_from_logits(logits, mask).item() == pytest.approx(math.log(8), abs=1e-6)
    p = torch.softmax(torch.randn(1, 1, 8), -1)
    h = -(p * p.log()).sum()
    assert entropy_from_logits(p.log(), torch.ones(1, 1)).item() == pytest.approx(h.item(), abs=1e-5)


def test_value_tracker_ema_and_global_mean():
    vt = ValueTracker(rate=0.5)
    assert vt.baseline(["a"]).tolist() == [0.0]  # nothing seen: global mean 0
    vt.update(["a", "a"], [1.0, 3.0])
    # a: 0 → 0.5·0 + 0.5·1 = 0.5 → 0.5·0.5 + 0.5·3 = 1.75; global mean (1 + 3)/2 = 2
    assert vt.baseline(["a", "new"]).tolist() == [1.75, 2.0]
    vt.update(["b"], torch.tensor([0.0]))  # starts from the global mean 2 → 1.0
    assert vt.values["b"] == 1.0 and vt.global_mean == pytest.approx(4 / 3)
    assert len(vt) == 2 and "b" in vt and vt.counts == {"a": 2, "b": 1}


def test_value_tracker_advantages_use_pre_update_baseline():
    vt = ValueTracker(rate=0.1)
    vt.update(["p", "q"], [1.0, -1.0])
    before = vt.baseline(["p", "q", "r"])
    rewards = torch.tensor([2.0, 0.0, 1.0])
    raw = vt.advantages(["p", "q", "r"], rewards, normalize=False, update=False)
    torch.testing.assert_close(raw, rewards - before)
    adv = vt.advantages(["p", "q", "r"], rewards)
    torch.testing.assert_close(adv, (raw - raw.mean()) / raw.std(unbiased=False))
    assert vt.values["p"] == pytest.approx(0.9 * 0.1 + 0.1 * 2.0)
    assert "r" in vt
    single = ValueTracker().advantages(["x"], [0.7])
    assert single.tolist() == pytest.approx([0.7])


def test_value_tracker_state_roundtrip():
    vt = ValueTracker(rate=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        vt.update(
            [f"k{i}" for i in torch.randint(0, 4, (6,), generator=g).tolist()], torch.rand(6, generator=g)
        )
    state = json.loads(json.dumps(vt.state_dict()))
    restored = ValueTracker(rate=0.9)
    restored.load_state_dict(state)
    assert restored.state_dict() == vt.state_dict()
    keys, r = ["k0", "k3", "zz"], torch.tensor([0.3, 0.1, 0.9])
    torch.testing.assert_close(restored.advantages(keys, r), vt.advantages(keys, r))
    assert restored.state_dict() == vt.state_dict()


def test_prompt_key_stable():
    chat = [{"role": "user", "content": "hi"}]
    assert prompt_key(chat) == prompt_key([{"content": "hi", "role": "user"}])
    assert prompt_key(chat) != prompt_key([{"role": "user", "content": "hi!"}])
    assert prompt_key("abc") == prompt_key("abc") and len(prompt_key("abc")) == 40
