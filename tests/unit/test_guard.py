"""The source root is named ``operator/``, like the stdlib module: it must never shadow it."""

from __future__ import annotations

import operator
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_operator_is_the_stdlib_module() -> None:
    path = Path(operator.__file__).resolve()
    stdlib = Path(sys.base_prefix).resolve() / "lib"
    assert path.is_relative_to(stdlib), f"operator imported from {path}, not the stdlib under {stdlib}"
    assert not path.is_relative_to(REPO / "operator")
    assert operator.itemgetter(1)("ab") == "b"


def test_operator_dir_is_not_a_package() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()
