"""Parametrisation with measured known failures: `xfail(strict=True, raises=AssertionError)` for the
names in `known` (reason: the figures), so an unexpected pass is reported and a crash still fails."""

import pytest


def with_known_failures(names, known: dict[str, str]) -> list:
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=known[n]))
        if n in known
        else n
        for n in names
    ]
