"""bench.report.per_n_cli, the command line of the per-N benchmarks (scale, peer): the raw numbers are on disk
after every N, and --from-json renders them without measuring."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from bench.common import Result
from bench.report import per_n_cli


def result(ns: list[int]) -> Result:
    return Result(name="fake", title="Fake", method="m", date="d", trials=len(ns), failed_trials=0,
                  wall_seconds=60.0, tables=[], verdict=f"runs {ns}", notes=[], raw={})


def cli(argv: list[str], measure: Callable[[argparse.Namespace, Callable[[Mapping[str, Any]], None]], Result],
        ) -> int:
    return per_n_cli(argv, name="fake", doc=None, default_n=(5, 7), measure=measure,
                     render=lambda saved: result(list(saved["runs"])),
                     options=lambda p: p.add_argument("--interval", type=float, default=2.0))


def test_the_raw_numbers_are_saved_after_every_n_and_rendered_back(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "raw.json"
    seen: list[list[int]] = []

    def measure(args: argparse.Namespace, save: Callable[[Mapping[str, Any]], None]) -> Result:
        assert args.n == [3, 4] and args.interval == 0.5 and not args.keep
        done: list[int] = []
        for n in args.n:
            done.append(n)
            save({"runs": done})
            seen.append(json.loads(out.read_text())["runs"])  # on disk before the next N starts
        return result(done)

    assert cli(["--n", "3", "4", "--interval", "0.5", "--json", str(out)], measure) == 0
    assert seen == [[3], [3, 4]]
    assert "**runs [3, 4]**" in capsys.readouterr().out

    def never(args: argparse.Namespace, save: Callable[[Mapping[str, Any]], None]) -> Result:
        raise AssertionError("--from-json measured")

    assert cli(["--from-json", str(out)], never) == 0
    assert "**runs [3, 4]**" in capsys.readouterr().out


def test_without_json_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)

    def measure(args: argparse.Namespace, save: Callable[[Mapping[str, Any]], None]) -> Result:
        assert args.n == [5, 7] and args.json is None
        save({"runs": args.n})
        return result(args.n)

    assert cli([], measure) == 0
    assert list(tmp_path.iterdir()) == []
    assert "**runs [5, 7]**" in capsys.readouterr().out
