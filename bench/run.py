"""Run every benchmark (one after another, each with its own environment) and rewrite docs/benchmarks.md.

    make bench                                   # = PYTHONPATH=operator python -m bench.run
    PYTHONPATH=operator python -m bench.run [--trials 20] [--only breach_to_stable] [--no-docs] [--json-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from bench import approve_to_shift, breach_to_stable, rollback_path, scale
from bench.common import Result
from bench.report import DOC, machine_line, update_section, write_document

Measure = Callable[[int], Result]

BENCHMARKS: dict[str, Measure] = {
    breach_to_stable.NAME: lambda trials: breach_to_stable.measure(trials)[0],
    approve_to_shift.NAME: lambda trials: approve_to_shift.measure(trials)[0],
    rollback_path.NAME: lambda trials: rollback_path.measure(trials)[0],
    scale.NAME: lambda trials: scale.measure(scale.DEFAULT_N)[0],  # its N, not trials
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="measured trials per benchmark (default 20)")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this one (repeatable)")
    parser.add_argument("--no-docs", action="store_true", help=f"print the results, leave {DOC} alone")
    parser.add_argument("--json-dir", type=Path, help="write NAME.json with the raw per-trial numbers here")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    results: list[Result] = []
    for name in names:
        print(f"=== {name}", file=sys.stderr)
        result = BENCHMARKS[name](max(args.trials, 1))
        results.append(result)
        print(result.markdown(machine_line()))
        if args.json_dir:
            args.json_dir.mkdir(parents=True, exist_ok=True)
            (args.json_dir / f"{name}.json").write_text(result.to_json())
    if not args.no_docs:
        if args.only:
            for result in results:  # a partial run keeps the other sections as they are
                update_section(result)
        else:
            write_document(results)
        print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
