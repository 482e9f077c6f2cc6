"""The command line never drops what a user typed (issue 19): config files (YAML / JSON) and
`key=value` overrides, list options with several values or repeated flags, strict positionals,
did-you-mean from the command's own options, every stage's flags checked before any model or data
is loaded, a re-runnable lmforge_args.yaml, ecosystem outputs, `--report_to` / scheduler types,
lmforge-only logging and `lmforge env`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmforge import cli
from lmforge.config.loader import resolve
from lmforge.errors import LmforgeError
from lmforge.pipeline import resolve_train_config, run_train

ROOT = Path(__file__).resolve().parents[1]
NO_MODEL = ["--model_name_or_path", "/nonexistent/lmforge-model", "--dataset", "/nonexistent/data.jsonl"]


# --- config files and overrides -----------------------------------------------------------------
def test_key_value_override_after_yaml_wins(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("learning_rate: 3.0e-4\nmax_length: 128\n")
    _, cfg = resolve_train_config("sft", [str(cfg_file), "learning_rate=1e-5"])
    assert cfg["learning_rate"] == 1e-5 and cfg["max_length"] == 128
    _, cfg = resolve_train_config("sft", [str(cfg_file), "--learning_rate=2e-5", "cutoff_len=64"])
    assert cfg["learning_rate"] == 2e-5 and cfg["max_length"] == 64  # LLaMA-Factory alias as key=value


def test_json_config_file_is_read(tmp_path):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(
        json.dumps({"learning_rate": 7e-4, "max_length": 96, "lora_target": ["q_proj", "v_proj"]})
    )
    _, cfg = resolve_train_config("sft", [str(cfg_file)])
    assert cfg["learning_rate"] == 7e-4 and cfg["max_length"] == 96 and cfg["lora_target"] == "q_proj,v_proj"
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "learning_rate": 1e-3,\n}')
    with pytest.raises(LmforgeError, match=r"bad\.json:3: not valid JSON"):
        resolve_train_config("sft", [str(bad)])


def test_extra_words_are_errors(tmp_path, capsys):
    with pytest.raises(LmforgeError, match="unexpected argument ';'"):
        resolve_train_config("pretrain", ["--max_steps", "1", ";", "touch", "x"])
    code = cli.main(["train", "pretrain", "--preset", "tiny", ";", "touch", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "unexpected argument ';'" in err and not (tmp_path / "x").exists()
    with pytest.raises(LmforgeError, match="unknown option --lerning_rate; did you mean --learning_rate"):
        resolve_train_config("sft", ["lerning_rate=1e-5"])
    for argv in (["init", "stray"], ["data", "synth", "stray"], ["chat", "--model", "m", "stray"]):
        assert cli.main(argv) == 2
        assert "unexpected argument 'stray'" in capsys.readouterr().err


def test_scalar_flag_given_twice_keeps_the_last_and_says_so(caplog):
    with caplog.at_level("WARNING", logger="lmforge"):
        _, cfg = resolve_train_config("sft", ["--learning_rate", "1e-5", "--learning_rate", "2e-5"])
    assert cfg["learning_rate"] == 2e-5 and "--learning_rate given twice (1e-05, then 2e-05)" in caplog.text
    with caplog.at_level("WARNING", logger="lmforge"):
        _, cfg = resolve_train_config("sft", ["--epochs", "1", "--num_train_epochs", "2"])  # MiniMind alias
    assert cfg["num_train_epochs"] == 2 and "--num_train_epochs given twice" in caplog.text


# --- list options --------------------------------------------------------------------------------
def test_list_options_take_several_values_and_accumulate():
    _, cfg = resolve_train_config(
        "sft",
        [
            "--dataset", "a.jsonl", "b.jsonl",
            "--lora_target", "q_proj", "v_proj",
            "--modules_to_save", "embed_tokens", "lm_head",
            "--train-target", "encoder", "--train-target", "projector",
            "--report_to", "tensorboard", "--report_to", "wandb",
            "--freeze_extra_modules", "norm,lm_head",
        ],
    )  # fmt: skip
    assert cfg["dataset"] == "a.jsonl,b.jsonl"
    assert cfg["lora_target"] == "q_proj,v_proj"
    assert cfg["modules_to_save"] == "embed_tokens,lm_head"
    assert cfg["train_target"] == "encoder,projector"
    assert cfg["report_to"] == ["tensorboard", "wandb"]
    assert cfg["freeze_extra_modules"] == "norm,lm_head"
    _, cfg = resolve_train_config("sft", ["--report_to", "tensorboard,wandb"])
    assert cfg["report_to"] == ["tensorboard", "wandb"]
    _, cfg = resolve_train_config(
        "grpo", ["--reward_funcs", "accuracy", "format", "--reward_weights", "1", "0.5"]
    )
    assert cfg["reward_funcs"] == "accuracy,format" and cfg["reward_weights"] == "1,0.5"


def test_two_datasets_after_one_flag_both_train(synth_dir):
    from lmforge.pipeline import StageContext, load_data

    a = synth_dir / "pretrain.jsonl"
    n_a = sum(1 for _ in open(a, encoding="utf-8"))
    _, cfg = resolve_train_config("pretrain", ["--dataset", str(a), str(a), "--preset", "tiny"])
    rows, _ = load_data(StageContext(stage="pretrain", cfg=cfg, run_dir=""), "pretrain")
    assert len(rows) == 2 * n_a


def test_lora_target_and_modules_to_save_reach_the_model(tokenizer):
    from lmforge.models.scratch import init_model
    from lmforge.tuners.apply import apply_tuner

    _, cfg = resolve_train_config(
        "sft",
        [
            "--tuner",
            "lora",
            "--lora_target",
            "q_proj",
            "v_proj",
            "--modules_to_save",
            "embed_tokens",
            "lm_head",
        ],
    )
    model = init_model(tokenizer, preset="tiny", seed=0)
    tuned = apply_tuner(model, cfg, run_dir="", num_training_steps=1).model
    names = [n for n, _ in tuned.named_modules()]
    assert any(n.endswith("q_proj.lora_A") for n in names) and any(n.endswith("v_proj.lora_A") for n in names)
    assert not any(n.endswith("k_proj.lora_A") for n in names)
    trainable = {n for n, p in tuned.named_parameters() if p.requires_grad}
    assert any("embed_tokens.modules_to_save" in n for n in trainable)
    assert any("lm_head.modules_to_save" in n for n in trainable)


# --- did you mean --------------------------------------------------------------------------------
def test_did_you_mean_only_from_the_command_and_never_the_word_typed(capsys):
    # (chat takes ms-swift's --ckpt_dir since issue 20; a training alias chat lacks stands in)
    assert cli.main(["chat", "--accumulation_steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown option --accumulation_steps" in err and "did you mean --accumulation_steps" not in err
    assert cli.main(["init", "--batch_siz", "4"]) == 2  # batch_size is a training alias init lacks
    err = capsys.readouterr().err
    assert "unknown option --batch_siz" in err and "--batch_size" not in err
    assert cli.main(["init", "--hiden_size", "64"]) == 2
    assert "did you mean --hidden_size?" in capsys.readouterr().err


# --- validation before loading -------------------------------------------------------------------
BAD_FLAGS = {
    "pretrain": (["--lr_scheduler_type", "nope"], "training arguments"),
    "sft": (["--loss_chunk_size", "-1"], "--loss_chunk_size must be 0"),
    "distill": (["--alpha", "1.5"], "--alpha must be in"),
    "distill-reason": (["--marker_weight", "-1"], "--marker_weight must be >= 0"),
    "distill-api": (["--base_url", "http://127.0.0.1:9/v1"], "--teacher_model is required"),
    "rm": (["--center_rewards_coefficient", "-0.5"], "--center_rewards_coefficient must be >= 0"),
    "dpo": (["--loss_type", "sigmoid,bogus"], "'bogus' is not a DPO loss"),
    "kto": (["--per_device_train_batch_size", "1"], "must be >= 2"),
    "orpo": (["--beta", "0"], "--beta must be > 0"),
    "simpo": (["--label_smoothing", "0.9"], "--label_smoothing must be in"),
    "cpo": (["--cpo_alpha", "-1"], "--cpo_alpha must be >= 0"),
    "grpo": (["--num_generations", "3"], "--num_generations 3 must be >= 2 and divide"),
    "ppo": (["--update_old_actor_freq", "0"], "--update_old_actor_freq must be >= 1"),
    "spo": (["--spo_ema", "0"], "--spo_ema must be in"),
}


def test_every_registered_stage_has_a_bad_flag_case():
    from lmforge.stages import STAGES

    assert set(BAD_FLAGS) == set(STAGES)


MORE_BAD_FLAGS = [  # checks that used to run only once the model and data were loaded
    ("grpo", ["--reward_funcs", "accuracy,bogus"], "unknown reward 'bogus'"),
    ("spo", ["--reward_weights", "1,2"], "2 value\\(s\\) for 1 reward"),
    ("ppo", ["--reward_model_path", "/nonexistent/rm", "--reward_weights", "1"], "for 2 reward"),
    ("distill", ["--temperature", "0"], "--temperature must be > 0"),
    ("sft", ["--streaming", "--max_steps", "0"], "--streaming needs --max_steps"),
]
CASES = [(stage, *BAD_FLAGS[stage]) for stage in sorted(BAD_FLAGS)] + MORE_BAD_FLAGS


@pytest.mark.parametrize("stage,flags,message", CASES, ids=[f"{c[0]}-{c[1][0]}" for c in CASES])
def test_stage_flags_are_checked_before_the_model_is_loaded(stage, flags, message, tmp_path):
    with pytest.raises(LmforgeError, match=message):
        run_train(stage, [*NO_MODEL, "--output_dir", str(tmp_path / "run"), *flags])
    assert not (tmp_path / "run").exists()
    with pytest.raises(LmforgeError, match="lmforge-model"):  # the same command, flag fixed: the model
        run_train(stage, [*NO_MODEL, "--output_dir", str(tmp_path / "run"), *_good(stage)])


def _good(stage):
    return {"distill-api": ["--teacher_model", "t"], "kto": ["--per_device_train_batch_size", "2"]}.get(
        stage, []
    )


def test_stage_contract(tmp_path):
    import dataclasses

    from lmforge.config.loader import collect_specs
    from lmforge.pipeline import GROUPS
    from lmforge.stages import STAGES, get_stage
    from lmforge.stages.contract import Stage, problems

    for name in STAGES:
        module = get_stage(name)
        assert isinstance(module, Stage), name
        assert problems(module) == [], name
        assert dataclasses.is_dataclass(module.Args), name
        specs = collect_specs([*GROUPS, module.Args], include_hf=True)
        assert set(module.DEFAULTS) <= set(specs), name
        _, cfg = resolve_train_config(name, [*_good(name)])
        assert module.validate(cfg) is None
        args_cls, fields = module.trainer_config(cfg)
        assert args_cls is None or isinstance(args_cls, type)
        assert isinstance(fields, dict)


def test_every_command_has_its_handler():
    for words, (summary, handler) in cli.COMMANDS.items():
        module, name = handler.split(".")
        assert summary and callable(getattr(cli._HANDLER_MODULES[module], name)), words


def test_stage_contract_names_what_is_wrong():
    import types

    from lmforge.stages.contract import optional, problems
    from lmforge.stages.sft import Args

    fake = types.ModuleType("fake", "A fake stage.")
    fake.DATA_KIND, fake.DEFAULTS, fake.Args = "chat", {}, Args
    fake.validate = lambda cfg: None
    fake.trainer_config = lambda cfg: (None, {})
    fake.prepare = lambda ctx, rows: rows
    fake.build_trainer = lambda ctx: None
    assert problems(fake) == [] and optional(fake, "check_data") is None
    fake.prepare = lambda rows: rows  # the wrong signature
    fake.check_data = lambda ctx, extra: None
    fake.FEATURE_KEYS = ["a"]
    del fake.DEFAULTS
    assert problems(fake) == [
        "fake: missing DEFAULTS",
        "fake: prepare(rows): expected prepare(ctx, rows)",
        "fake: FEATURE_KEYS must be a tuple; got list",
        "fake: check_data(ctx, extra): expected check_data(ctx)",
    ]
    with pytest.raises(KeyError):
        optional(fake, "prepare")


# --- report_to, schedulers, LLaMA-Factory flags --------------------------------------------------
@pytest.mark.parametrize(
    "flags,package",
    [
        (["--report_to", "wandb"], "wandb"),
        (["--use_wandb"], "wandb"),
        (["--report_to", "tensorboard"], "tensorboard"),
        (["--report_to", "tensorboard,wandb"], "tensorboard"),
    ],
)
def test_missing_integration_is_one_line_with_pip(flags, package, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: None if n in ("wandb", "tensorboard", "tensorboardX") else real(n, *a),
    )
    with pytest.raises(LmforgeError, match=f"pip install {package}$"):
        run_train("sft", [*NO_MODEL, "--output_dir", str(tmp_path / "r"), *flags])


def test_report_to_list_passes_when_installed(monkeypatch):
    import importlib.util

    from lmforge.training.checks import check_report_to

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n in ("wandb", "tensorboard") else real(n, *a)
    )
    _, cfg = resolve_train_config("sft", ["--report_to", "tensorboard", "wandb"])
    check_report_to(cfg)
    _, cfg = resolve_train_config("sft", ["--report_to", "tensorbored"])
    with pytest.raises(LmforgeError, match="not an integration"):
        check_report_to(cfg)


def test_every_transformers_scheduler_type_builds(tmp_path):
    import torch
    from transformers import SchedulerType, get_scheduler

    from lmforge.stages import get_stage
    from lmforge.training.checks import validate_config
    from lmforge.training.trainer import scheduler_kwargs_for

    for kind in SchedulerType:
        on_eval = kind.value in ("reduce_lr_on_plateau", "greedy")  # they follow the eval loss
        extra = ["--val_size", "0.1"] if on_eval else []
        _, cfg = resolve_train_config(
            "sft", ["--lr_scheduler_type", kind.value, "--warmup_steps", "2", *extra]
        )
        args = validate_config(get_stage("sft"), cfg, str(tmp_path))
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = get_scheduler(
            args.lr_scheduler_type,
            opt,
            num_warmup_steps=args.get_warmup_steps(10),
            num_training_steps=10,
            scheduler_specific_kwargs=scheduler_kwargs_for(args, 10),
        )
        opt.step()
        sched.step(1.0) if on_eval else sched.step()
    _, cfg = resolve_train_config("sft", [])  # lmforge's default keeps its 0.1 x lr floor
    assert cfg["lr_scheduler_type"] == "cosine_with_min_lr" and cfg["lr_scheduler_kwargs"] == {
        "min_lr_rate": 0.1
    }


def test_llamafactory_yaml_through_the_parser(tmp_path):
    from lmforge.config.loader import collect_specs
    from lmforge.pipeline import GROUPS
    from lmforge.stages import get_stage

    lf = {  # keys as in LLaMA-Factory's argument reference (shared/reference/seed_003)
        "model_name_or_path": "out/base",
        "stage": "sft",
        "finetuning_type": "lora",
        "lora_rank": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "lora_target": "q_proj,v_proj",
        "additional_target": "embed_tokens",
        "dataset": "data/a.jsonl,data/b.jsonl",
        "cutoff_len": 1024,
        "max_samples": 1000,
        "overwrite_cache": True,
        "preprocessing_num_workers": 2,
        "val_size": 0.1,
        "train_on_prompt": False,
        "flash_attn": "sdpa",
        "neat_packing": True,
        "default_system": "You are helpful.",
        "output_dir": "saves/lora",
        "logging_steps": 10,
        "save_steps": 500,
        "plot_loss": True,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 8,
        "learning_rate": 1.0e-4,
        "num_train_epochs": 3.0,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "report_to": "none",
    }
    specs = collect_specs([*GROUPS, get_stage("sft").Args], include_hf=True)
    if "template" in specs:  # chat templates by name (another change adds the field)
        lf["template"] = "qwen"
    path = tmp_path / "lf_sft.yaml"
    path.write_text(yaml.safe_dump(lf))
    _, cfg = resolve_train_config("sft", [str(path), "learning_rate=5e-5"])
    assert cfg["tuner"] == "lora" and cfg["lora_rank"] == 16 and cfg["max_length"] == 1024
    assert cfg["modules_to_save"] == "embed_tokens" and cfg["plot"] is True and cfg["overwrite_cache"] is True
    assert (
        cfg["attn_implementation"] == "sdpa"
        and cfg["packing"] is True
        and cfg["system"] == "You are helpful."
    )
    assert cfg["warmup_steps"] == 0.1 and cfg["learning_rate"] == 5e-5
    assert cfg["lr_scheduler_type"] == "cosine" and cfg["lr_scheduler_kwargs"] == {}


def test_llamafactory_train_config_names_the_stage(tmp_path, capsys):
    path = tmp_path / "pt.yaml"
    path.write_text(
        "stage: pt\nmodel_name_or_path: /nonexistent/lmforge-model\ndataset: /nonexistent/d.jsonl\n"
    )
    _, cfg = resolve_train_config("pretrain", [str(path)])
    assert cfg["stage"] == "pretrain"
    assert cli.main(["train", str(path), "--max_steps", "1"]) == 2  # `llamafactory-cli train cfg.yaml`
    assert "lmforge-model" in capsys.readouterr().err  # ran as pretrain: got as far as the model
    path.write_text("learning_rate: 1.0e-4\n")
    assert cli.main(["train", str(path)]) == 2
    assert "set `stage:` in" in capsys.readouterr().err


def _command_groups(words):
    from lmforge.commands import SynthArgs, TokenizerTrainArgs
    from lmforge.infer.args import GenerationArgs
    from lmforge.infer.chat import ChatArgs

    return {
        ("data", "synth"): [SynthArgs],
        ("tokenizer", "train"): [TokenizerTrainArgs],
        ("chat",): [ChatArgs, GenerationArgs],
    }[words]


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_through_the_parser(recipe):
    from lmforge.pipeline_file import load_pipeline

    _, stages = load_pipeline(str(recipe))
    for st in stages:
        words = tuple(st["command"].split())
        args = st.get("args") or {}
        if words[0] == "train":
            _, cfg = resolve_train_config(words[1], [], values=args)
        else:
            cfg = resolve(_command_groups(words), [], max_positionals=0, values=args)
        for key in st.get("args") or {}:
            assert key in cfg.explicit or cfg.values.get(key) is not None, (recipe.name, st["name"], key)


# --- the args file, outputs ----------------------------------------------------------------------
TINY_RUN = [
    "--preset", "tiny", "--max_length", "32", "--per_device_train_batch_size", "4",
    "--gradient_accumulation_steps", "1", "--max_steps", "2", "--logging_steps", "1",
    "--report_to", "none", "--dataloader_num_workers", "0", "--plot_loss", "false",
    "--lr_scheduler_type", "cosine", "--save_strategy", "no",
]  # fmt: skip


def _first_loss(run_dir):
    rows = [json.loads(x) for x in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if "loss" in r)


def _params(run_dir):
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(run_dir).parameters())


def test_args_file_reruns_the_same_run_and_outputs(synth_dir, tmp_path, one_thread):
    first = tmp_path / "first"
    run_train(
        "pretrain", ["--dataset", str(synth_dir / "pretrain.jsonl"), "--output_dir", str(first), *TINY_RUN]
    )
    recorded = yaml.safe_load((first / "lmforge_args.yaml").read_text())
    assert recorded["preset"] == "tiny" and "hidden_size" not in recorded  # what was asked
    for name in ("trainer_state.json", "train_results.json", "all_results.json"):
        assert (first / name).is_file(), name
    state = json.loads((first / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["log_history"]
    assert "train_loss" in json.loads((first / "train_results.json").read_text())
    again = tmp_path / "again"
    run_train("pretrain", [str(first / "lmforge_args.yaml"), "--output_dir", str(again)])
    assert _params(again) == _params(first) < 1_000_000  # the tiny preset, not the size flags' defaults
    assert _first_loss(again) == pytest.approx(_first_loss(first), abs=1e-6)


# --- logging, env --------------------------------------------------------------------------------
def test_only_lmforge_lines_carry_the_prefix():
    code = (
        "import logging, lmforge.runtime as r; r.setup();"
        "logging.getLogger('kernels').warning('Skipping publisher trust check');"
        "logging.getLogger('lmforge').info('own line')"
    )
    import os

    import lmforge

    env = {**os.environ, "PYTHONPATH": str(Path(lmforge.__file__).parents[1])}  # the code under test
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "[lmforge] own line" in out.stderr
    assert "Skipping publisher trust check" in out.stderr
    assert "[lmforge] Skipping" not in out.stderr


def test_python_api_and_cli_train_alike(synth_dir, tmp_path):
    """`run_train` from a bare Python process sets up the process as `lmforge train` does (logging,
    environment) and gives the same losses, bit for bit."""
    import json
    import os

    import lmforge
    from lmforge.runtime import ENV_DEFAULTS

    env = {k: v for k, v in os.environ.items() if k not in ENV_DEFAULTS and k != "LMFORGE_LOG_LEVEL"}
    env.update(PYTHONPATH=str(Path(lmforge.__file__).parents[1]), OMP_NUM_THREADS="1")
    flags = [*TINY_RUN, "--dataset", str(synth_dir / "pretrain.jsonl"), "--max_samples", "16"]
    code = (
        "import json, os, sys; from lmforge.pipeline import run_train; run_train('pretrain', sys.argv[1:]);"
        f"print(json.dumps({{k: os.environ.get(k) for k in {sorted(ENV_DEFAULTS)!r}}}))"
    )
    runs = {
        "python": [sys.executable, "-c", code, *flags, "--output_dir", str(tmp_path / "python")],
        "cli": [
            sys.executable,
            "-m",
            "lmforge",
            "train",
            "pretrain",
            *flags,
            "--output_dir",
            str(tmp_path / "cli"),
        ],
    }
    for name, argv in runs.items():
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "[lmforge] stage pretrain" in out.stderr, name  # lmforge's log handler is set up
        if name == "python":
            assert json.loads(out.stdout.strip().splitlines()[-1]) == ENV_DEFAULTS

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(ln)["loss"].hex() for ln in lines if "loss" in json.loads(ln)]

    assert len(losses("python")) == 2 and losses("python") == losses("cli")


def test_models_loaded_after_setup_run_no_hub_kernels(tmp_path):
    """transformers 5 kernelizes every from_pretrained model when `kernels` is installed; on a GPU
    that downloads and runs Hub code at model.train() (and fails offline). After lmforge's set-up a
    loaded model has them off, unless the user set USE_HUB_KERNELS."""
    import os

    import lmforge
    from transformers import Qwen3Config, Qwen3ForCausalLM

    size = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    Qwen3ForCausalLM(Qwen3Config(vocab_size=64, num_key_value_heads=1, **size)).save_pretrained(
        tmp_path / "m"
    )
    code = (
        "import sys, lmforge.runtime as r; r.setup();"
        "from transformers import AutoModelForCausalLM;"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); m.train(); print(m.use_kernels)"
    )
    env = {k: v for k, v in os.environ.items() if k != "USE_HUB_KERNELS"}
    env["PYTHONPATH"] = str(Path(lmforge.__file__).parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m")], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "False"


def test_env_lists_versions(capsys):
    assert cli.main(["env"]) == 0
    out = capsys.readouterr().out
    import torch
    import transformers

    assert f"torch: {torch.__version__}" in out and f"transformers: {transformers.__version__}" in out
    for name in ("lmforge:", "Python:", "CUDA:", "MPS:", "trl:", "peft:", "datasets:", "accelerate:",
                 "deepspeed:", "vllm:", "bitsandbytes:", "flash-attn:"):  # fmt: skip
        assert name in out, name
    assert cli.main(["env", "extra"]) == 2
