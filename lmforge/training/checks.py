"""Flag rules checked on the resolved config before any model or data is loaded (so a typo costs
seconds, not a tokenised dataset): the common ones here, each stage's own in its `validate`."""

from __future__ import annotations

from lmforge.config.loader import Config
from lmforge.errors import LmforgeError


def scheduler_kwargs(cfg: Config) -> None:
    """lmforge's default `min_lr_rate` belongs to its default cosine-with-floor schedule: another
    `--lr_scheduler_type` (cosine, linear, ...) gets transformers' own defaults unless
    `--lr_scheduler_kwargs` is given too."""
    from lmforge.training.build import MIN_LR_SCHEDULERS

    if "lr_scheduler_kwargs" in cfg.explicit or cfg.get("lr_scheduler_type") in MIN_LR_SCHEDULERS:
        return
    cfg.values["lr_scheduler_kwargs"] = {}
    cfg.layered.discard("lr_scheduler_kwargs")


# --report_to name → (module that must import, pip package)
INTEGRATIONS = {
    "wandb": (("wandb",), "wandb"),
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet-ml"),
    "neptune": (("neptune",), "neptune"),
    "trackio": (("trackio",), "trackio"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "clearml": (("clearml",), "clearml"),
    "dagshub": (("dagshub",), "dagshub"),
    "flyte": (("flytekit",), "flytekit"),
    "dvclive": (("dvclive",), "dvclive"),
    "swanlab": (("swanlab",), "swanlab"),
    "azure_ml": (("azureml",), "azureml-core"),
    "kubeflow": (("kubeflow",), "kubeflow"),
}


def check_report_to(cfg: Config) -> None:
    """Every `--report_to` integration is known and installed (one line with the pip command)."""
    import importlib.util

    value = cfg.get("report_to")
    names = [value] if isinstance(value, str) else list(value or [])
    for name in (n.strip() for n in names):
        if name in ("none", "all", ""):
            continue
        if name not in INTEGRATIONS:
            raise LmforgeError(
                f"--report_to {name}: not an integration; choose from none, all, {', '.join(INTEGRATIONS)}"
            )
        modules, package = INTEGRATIONS[name]
        if not any(importlib.util.find_spec(m) for m in modules):
            raise LmforgeError(f"--report_to {name} needs the {package} package: pip install {package}")


def validate_config(module, cfg: Config, run_dir: str):
    """Every flag rule that needs no model and no data, before either is loaded: the stage's own
    (`validate`, its trainer config), the tuner's, the loggers', and the training arguments
    themselves. Returns the built training arguments."""
    from lmforge.models.options import check_options
    from lmforge.training.build import build_training_args
    from lmforge.tuners.apply import check_tuner_config
    from lmforge.tuners.optim import training_overrides

    if cfg["loss_chunk_size"] < 0:
        raise LmforgeError(f"--loss_chunk_size must be 0 (off) or positive; got {cfg['loss_chunk_size']}")
    if cfg["max_length"] < 1:
        raise LmforgeError(f"--max_length must be >= 1; got {cfg['max_length']}")
    if cfg["streaming"]:
        if cfg["max_steps"] is None or cfg["max_steps"] <= 0:
            raise LmforgeError("--streaming needs --max_steps (a stream has no length to count epochs by)")
        if cfg.get("val_size"):
            raise LmforgeError("--streaming cannot hold out --val_size rows; pass --val_dataset instead")
    check_report_to(cfg)
    check_tuner_config(cfg, has_base=bool(cfg.get("model_name_or_path")))
    module.validate(cfg)
    check_options(module, cfg)
    args_cls, stage_fields = module.trainer_config(cfg)
    overrides = {**training_overrides(cfg), **stage_fields}
    return build_training_args(cfg, run_dir, overrides=overrides, args_cls=args_cls)
