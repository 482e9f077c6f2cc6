"""Shared fixtures: the shipped tokenizer, synthetic data, offline settings."""

import os

import pytest

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # bitwise-reproducible CPU BLAS (see lmforge/runtime.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; more only contend on a shared 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    from lmforge.models.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """The bundled synthetic corpora at a small scale (generated once per test session)."""
    from lmforge.data.synth import synth

    out = tmp_path_factory.mktemp("synth")
    synth(str(out), seed=0, scale=0.2)
    return out
