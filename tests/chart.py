"""hack/render_chart.py (a script, not a package), loaded once per test run for the packaging tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    if "render_chart" in sys.modules:
        return sys.modules["render_chart"]
    spec = importlib.util.spec_from_file_location("render_chart", ROOT / "hack" / "render_chart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["render_chart"] = module
    return module


render_chart = _load()
