"""The package's public names resolve lazily, and importing it alone does not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import reweight


@pytest.mark.parametrize("name", reweight.__all__)
def test_public_names_resolve(name: str) -> None:
    assert getattr(reweight, name).__name__ == name
    assert name in dir(reweight)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nope"):
        reweight.nope  # type: ignore[attr-defined]  # noqa: B018


def test_import_alone_does_not_import_torch() -> None:
    code = "import sys, reweight; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
