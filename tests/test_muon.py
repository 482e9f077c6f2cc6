"""`--optim muon` (lmforge/tuners/muon.py) on the tiny preset: pretraining learns, every parameter
moves, the decoder blocks' matrices are stepped by Muon and the rest by AdamW, the LR schedule
drives both, and the flag is refused where it cannot work. Exact resume after kill -9 with
`--optim muon` is a case of tests/test_training.py's kill-9 test."""

import copy
import json
import math

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.pipeline import resolve_train_config, run_train
from lmforge.training.trainer import LmforgeTrainer
from lmforge.tuners.apply import check_tuner_config
from lmforge.tuners.muon import USE_MUON, MuonAdamW

QUIET = ["--report_to", "none", "--dataloader_num_workers", "0", "--plot", "false"]


@pytest.fixture(scope="module")
def muon_run(synth_dir, tmp_path_factory, one_thread):
    seen: dict = {}
    original = LmforgeTrainer.train

    def train(self, *args, **kwargs):
        seen["before"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        result = original(self, *args, **kwargs)
        seen["names"] = {id(p): n for n, p in self.model.named_parameters()}
        seen["after"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        seen["optimizer"] = getattr(self.optimizer, "optimizer", self.optimizer)  # under accelerate's wrapper
        return result

    out = tmp_path_factory.mktemp("muon") / "pretrain"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LmforgeTrainer, "train", train)
        run_train(
            "pretrain",
            [
                *("--dataset", str(synth_dir / "pretrain.jsonl"), "--output_dir", str(out)),
                *("--preset", "tiny", "--max_length", "64", "--per_device_train_batch_size", "4"),
                *("--gradient_accumulation_steps", "1", "--learning_rate", "3e-3", "--max_steps", "40"),
                *("--save_steps", "100", "--logging_steps", "5", "--optim", "muon", *QUIET),
            ],
        )
    seen["out"] = out
    seen["losses"] = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    return seen


def test_muon_pretrain_learns_and_moves_every_parameter(muon_run):
    losses = muon_run["losses"]
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0  # clearly learning
    unchanged = [n for n, p in muon_run["before"].items() if torch.equal(p, muon_run["after"][n])]
    assert not unchanged, unchanged


def test_muon_steps_the_block_matrices_and_adamw_the_rest(muon_run):
    opt, names = muon_run["optimizer"], muon_run["names"]
    assert isinstance(opt, MuonAdamW)
    by_engine: dict[bool, set[str]] = {True: set(), False: set()}
    for group in opt.param_groups:
        by_engine[group[USE_MUON]] |= {names[id(p)] for p in group["params"]}
    muon, adamw = by_engine[True], by_engine[False]
    expected = {n for n, p in muon_run["after"].items() if ".layers." in n and p.ndim == 2}
    assert muon == expected and any("self_attn.q_proj" in n for n in muon) and any("mlp." in n for n in muon)
    assert any("embed_tokens" in n for n in adamw) and any("norm" in n for n in adamw)
    assert muon.isdisjoint(adamw) and muon | adamw == set(muon_run["after"])
    # what each engine left in the shared state: Muon a momentum buffer, AdamW its two moments
    for group in opt.param_groups:
        for p in group["params"]:
            keys = set(opt.state[p])
            assert keys == ({"momentum_buffer"} if group[USE_MUON] else {"step", "exp_avg", "exp_avg_sq"})
    # the schedule drove both engines: every group ends at the cosine floor (0.1 x lr)
    assert all(g["lr"] == pytest.approx(3e-4) for g in opt.param_groups)
    assert all(g["adjust_lr_fn"] == "match_rms_adamw" for g in opt.param_groups if g[USE_MUON])


def test_muon_state_dict_round_trips():
    """load_state_dict replaces the groups and the state; the engines must step the new ones."""
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(4))

    def make():
        return MuonAdamW([{"params": [w]}], [{"params": [b]}], lr=0.01)

    def step(opt):
        opt.zero_grad()
        ((torch.ones(3, 8) @ w) @ b).pow(2).sum().backward()
        opt.step()

    first = make()
    step(first)
    saved = copy.deepcopy(first.state_dict())  # state_dict() holds the live tensors
    start = (w.detach().clone(), b.detach().clone())
    step(first)
    after_two = (w.detach().clone(), b.detach().clone())
    with torch.no_grad():
        w.copy_(start[0])
        b.copy_(start[1])
    second = make()
    second.load_state_dict(saved)
    step(second)
    assert torch.equal(w, after_two[0]) and torch.equal(b, after_two[1])


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--tuner", "lora"], "--tuner full"),
        (["--use_galore", "true"], "choose one"),
        (["--deepspeed", "zero2"], "plain DDP"),
        (["--fsdp", "full_shard"], "plain DDP"),
    ],
)
def test_muon_is_refused_where_it_cannot_work(flags, needle):
    _, cfg = resolve_train_config("sft", ["--optim", "muon", *flags])
    with pytest.raises(LmforgeError) as err:
        check_tuner_config(cfg, has_base=True)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_muon_is_recorded_for_rerun_and_resume(muon_run):
    from lmforge.tuners.optim import optimizer_factory, training_overrides

    _, cfg = resolve_train_config("pretrain", [str(muon_run["out"] / "lmforge_args.yaml")])
    assert cfg["optim"] == "muon"
    assert training_overrides(cfg) == {"optim": "adamw_torch"}  # the value TrainingArguments accepts
    assert optimizer_factory(cfg, "full").__name__ == "muon_optimizer"


def test_a_group_added_later_is_stepped_by_adamw():
    """PPO adds its critic as a param group after the optimizer is built."""
    w, c = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(4, 4))
    opt = MuonAdamW([{"params": [w]}], [], lr=0.01)
    opt.add_param_group({"params": [c], "lr": 0.1})
    assert opt.param_groups[-1][USE_MUON] is False and opt.param_groups[-1]["betas"] == (0.9, 0.999)
    (w.sum() + c.sum()).backward()
    opt.step()
    assert set(opt.state[w]) == {"momentum_buffer"} and set(opt.state[c]) == {"step", "exp_avg", "exp_avg_sq"}


def _tiny_pretrain(synth_dir, out, *flags):
    return [
        *("--dataset", str(synth_dir / "pretrain.jsonl"), "--output_dir", str(out)),
        *("--preset", "tiny", "--max_length", "64", "--per_device_train_batch_size", "4"),
        *("--gradient_accumulation_steps", "1", "--logging_steps", "1", *QUIET, *flags),
    ]


@pytest.mark.parametrize(
    "stage,flags,muon",
    [
        ("pretrain", [], True),  # from scratch, nothing said: Muon at its rate
        ("pretrain", ["--learning_rate", "5e-4"], False),  # a rate the user gave is AdamW's
        ("pretrain", ["--optim", "adamw_torch"], False),
        ("pretrain", ["--optim", "muon"], True),  # asked for: at Muon's rate too
        ("pretrain", ["--model_name_or_path", "some/model"], False),  # continued pretraining
        ("pretrain", ["--tuner", "lora"], False),
        ("pretrain", ["--use_galore", "true"], False),
        ("pretrain", ["--deepspeed", "zero2"], False),
        ("pretrain", ["--fsdp", "full_shard"], False),
        ("sft", [], False),
    ],
)
def test_from_scratch_pretraining_defaults_to_muon(stage, flags, muon):
    from lmforge.tuners.optim import SCRATCH_MUON_LEARNING_RATE

    _, cfg = resolve_train_config(stage, flags)
    assert (cfg["optim"] == "muon") is muon
    if muon:
        assert cfg["learning_rate"] == SCRATCH_MUON_LEARNING_RATE
        assert {"optim", "learning_rate"} <= set(cfg.to_yaml_dict())  # recorded for rerun and resume
    elif "--learning_rate" not in flags and "--tuner" not in flags:
        assert cfg["learning_rate"] != SCRATCH_MUON_LEARNING_RATE  # the stage's own default stays


def test_the_web_form_shows_and_sends_the_default_optimiser():
    from lmforge.tuners.optim import SCRATCH_MUON_LEARNING_RATE
    from lmforge.webui.forms import form_flags, form_values, stage_defaults

    shown = stage_defaults("pretrain")
    assert shown["optim"] == "muon" and shown["learning_rate"] == SCRATCH_MUON_LEARNING_RATE
    assert stage_defaults("pretrain", "lora")["optim"] != "muon"
    # an untouched form adds no optimiser flag: the command line resolves the same default
    flags = form_flags("pretrain", form_values("pretrain"))
    assert "--optim" not in flags and "--learning_rate" not in flags


def _train_seeing_optimizer(argv: list[str]):
    """run_train("pretrain", argv) and the optimizer it trained with (under accelerate's wrapper)."""
    seen = {}
    original = LmforgeTrainer.train

    def train(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        seen["optimizer"] = getattr(self.optimizer, "optimizer", self.optimizer)
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LmforgeTrainer, "train", train)
        run_train("pretrain", argv)
    return seen["optimizer"]


def test_default_pretraining_trains_with_muon(synth_dir, tmp_path, one_thread):
    optimizer = _train_seeing_optimizer(_tiny_pretrain(synth_dir, tmp_path / "run", "--max_steps", "20"))
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert isinstance(optimizer, MuonAdamW)
    assert all(g["lr"] == pytest.approx(8e-4) for g in optimizer.param_groups)  # cosine floor
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0


def test_a_run_started_with_adamw_resumes_with_adamw(synth_dir, tmp_path, one_thread):
    """A from-scratch run recorded before Muon became the default (no `optim` in its args file)
    resumes under the bare command with its own optimiser and rate; its AdamW state would not load
    into Muon's groups."""
    import yaml

    out = tmp_path / "run"
    first = ["--max_steps", "6", "--save_steps", "3"]
    run_train(
        "pretrain",
        _tiny_pretrain(synth_dir, out, *first, "--optim", "adamw_torch", "--learning_rate", "1e-3"),
    )
    args_file = out / "lmforge_args.yaml"
    recorded = yaml.safe_load(args_file.read_text())
    recorded.pop("optim")
    args_file.write_text(yaml.safe_dump(recorded))
    (out / "checkpoint-6").rename(out / "later")  # resume from step 3
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    _, cfg = resolve_train_config("pretrain", _tiny_pretrain(synth_dir, out, *first))
    assert cfg["optim"] == "muon"  # what the bare command alone would train with
    optimizer = _train_seeing_optimizer(
        _tiny_pretrain(synth_dir, out, *first, "--resume_from_checkpoint", str(out / "checkpoint-3"))
    )
    assert type(optimizer) is not MuonAdamW
    assert optimizer.param_groups[0]["initial_lr"] == pytest.approx(1e-3)
    resumed = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert resumed[3:6] == losses[3:6]  # the same steps 4-6 as the uninterrupted run
