"""Install: declared version floors against the APIs lmforge imports and against its dependencies'
own metadata, the Makefile's virtualenv and torch-index logic, and the platform fallbacks (MPS,
process groups) — all read from metadata or dry runs, nothing downloaded."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# (package, first version with the API, module, attribute): what lmforge imports that older
# releases lack. A floor below the version here would let pip resolve a release lmforge cannot use.
API_FLOORS = [
    ("trl", "1.15", "trl.kernels.chunked_divergence", None),  # train distill's chunked KL (trl 1.15)
    # DPO's fused chunked log-probs: in trl 1.15 this is None without triton (CPU), and DPOTrainer
    # fails with "'NoneType' object has no attribute 'apply'" (seen with the floors installed).
    ("trl", "1.16", "trl.kernels", "ChunkedLogProbFunction"),
    ("gguf", "0.17", "gguf", "MODEL_ARCH.QWEN3"),  # Qwen3 GGUF export (gguf-py 0.17)
    # train distill sets activation_checkpointing, new in 5.23 (5.15: "unexpected keyword argument")
    (
        "transformers",
        "5.23",
        "transformers",
        "TrainingArguments.__dataclass_fields__.activation_checkpointing",
    ),  # Qwen3 GGUF export (gguf-py 0.17)
]


def _floors() -> dict[str, Version]:
    """Lower bounds of every requirement in pyproject (core and extras), by normalised name."""
    reqs = list(PYPROJECT["dependencies"])
    for extra in PYPROJECT["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith("lmforge")]
    floors: dict[str, Version] = {}
    for text in reqs:
        req = Requirement(text)
        for spec in req.specifier:
            if spec.operator in (">=", "==", "~="):
                name = req.name.lower().replace("_", "-")
                floors[name] = max(floors.get(name, Version("0")), Version(spec.version))
    return floors


def _installed(name: str) -> Version | None:
    try:
        return Version(md.version(name))
    except md.PackageNotFoundError:
        return None


@pytest.mark.parametrize("package,first,module,attr", API_FLOORS)
def test_floor_covers_imported_api(package, first, module, attr):
    floors = _floors()
    assert floors.get(package, Version("0")) >= Version(first), (
        f"pyproject lets pip pick {package} below {first}, which lacks {module}"
    )
    if _installed(package) is None:
        pytest.skip(f"{package} is not installed in this environment")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    assert obj is not None, f"{module}.{attr} is None in {package} {_installed(package)}"


def test_requires_python_covers_dependencies():
    """Our Python floor is at least what the installed core dependencies declare (transformers 5.25,
    trl 1.15+ and accelerate 1.16 need 3.11: with a lower floor pip picks releases that break)."""
    ours = Version(re.sub(r"[^0-9.]", "", PYPROJECT["requires-python"]))
    for name in ("transformers", "trl", "accelerate", "peft", "datasets"):
        spec = md.metadata(name).get("Requires-Python") or ""
        for floor in re.findall(r">=\s*([0-9.]+)", spec):
            assert ours >= Version(floor), f"{name} needs Python >= {floor}; pyproject says {ours}"


def test_installed_versions_meet_floors():
    for name, floor in _floors().items():
        have = _installed(name)
        if have is not None and name != "torch":
            assert have >= floor, f"{name} {have} is installed, below the declared floor {floor}"


def test_constraints_pin_core_dependencies_and_not_torch():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = Version(version)
    assert "torch" not in pins  # a user's CUDA build of torch is kept; the Makefile pins torch
    floors = _floors()
    for req in PYPROJECT["dependencies"]:
        name = Requirement(req).name.lower()
        if name == "torch":
            continue
        assert name in pins, f"constraints.txt does not pin {name}"
        assert pins[name] in Requirement(req).specifier, f"constraints.txt pins {name} outside {req}"
        assert pins[name] >= floors[name]


def test_no_extra_lists_a_package_lmforge_never_imports():
    """openai lives only in dev (tests drive servers with the real client); psutil too."""
    extras = PYPROJECT["optional-dependencies"]
    for extra in ("serve", "api"):
        assert not any(r.startswith("openai") for r in extras[extra])
    assert not any(r.startswith("psutil") for r in PYPROJECT["dependencies"])
    for extra in ("tensorboard", "wandb", "deepspeed", "liger", "bnb", "vllm"):
        assert extra in extras, f"no [{extra}] extra"
    assert "gpu" not in extras  # it could not be installed as one (flash-attn sdist, vllm's pins)


def _make_dry_run(*args: str, env: dict[str, str]) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        ["make", "-n", "-B", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_install_creates_and_uses_a_venv_unless_one_is_active(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL")}
    text = _make_dry_run("install", "VENV=" + str(tmp_path / "v"), env=env)
    assert f"-m venv {tmp_path / 'v'}" in text
    assert f"{tmp_path / 'v'}/bin/python -m pip install" in text
    assert "-c constraints.txt" in text
    active = _make_dry_run("install", env={**env, "VIRTUAL_ENV": str(tmp_path / "active")})
    assert "-m venv" not in active
    assert f"{tmp_path / 'active'}/bin/python -m pip install" in active


def test_make_install_takes_torch_from_the_cpu_index_on_linux_without_nvidia(tmp_path):
    # A PATH without nvidia-smi: only the tools make's recipe lines call.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "uname", "echo", "make"):
        src = shutil.which(tool)
        if src is None:
            pytest.skip(f"{tool} not found")
        (bindir / tool).symlink_to(src)
    env = {"PATH": str(bindir), "HOME": str(tmp_path), "VIRTUAL_ENV": str(tmp_path / "v")}
    text = _make_dry_run("install", env=env)
    if os.uname().sysname == "Linux":
        assert "--index-url https://download.pytorch.org/whl/cpu" in text
    (bindir / "nvidia-smi").write_text("#!/bin/sh\n")
    (bindir / "nvidia-smi").chmod(0o755)
    assert "download.pytorch.org" not in _make_dry_run("install", env=env)


def test_inference_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    import torch

    from lmforge.infer.engine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_web_ui_stop_works_without_posix_process_groups(monkeypatch, tmp_path):
    """Windows has no killpg: Stop asks politely, then ends the process itself."""
    from lmforge.webui import jobs

    monkeypatch.setattr(jobs, "POSIX_GROUPS", False)
    called = []
    monkeypatch.setattr(jobs.os, "killpg", lambda *a: called.append(a), raising=False)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    job = jobs.TrainJob([sys.executable, "-c", stubborn], str(tmp_path), "stubborn")
    deadline = time.monotonic() + 30
    while "up" not in job.log.text() and time.monotonic() < deadline:
        time.sleep(0.05)
    job.stop(grace_s=0.5)
    job.proc.wait(timeout=30)
    assert job.proc.returncode == -signal.SIGKILL  # the polite signal was ignored; kill() ended it
    assert called == []
    assert job.status().startswith("stopped")
