"""docs/benchmarks.md: the machine description, the whole document, and one benchmark's section in place."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.common import REPO, Result, read_json
from devenv.localenv.controlplane import K8S_VERSION, KWOK_VERSION, ControlPlaneError, select_etcd
from devenv.localenv.prometheus import PROMETHEUS

DOC = REPO / "docs" / "benchmarks.md"


def _first_line(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def machine_line() -> str:
    """One line for each result section: CPUs, memory, Python."""
    cpus = len(os.sched_getaffinity(0))
    return f"{cpus} CPUs ({_cpu_model()}), {_memory_gib():.0f} GiB RAM, Python {platform.python_version()}"


def machine_section() -> str:
    cpus = len(os.sched_getaffinity(0))
    prom = _first_line([PROMETHEUS, "--version"])
    try:
        etcd = select_etcd().describe()
    except ControlPlaneError as e:
        etcd = str(e)
    rows = [
        ("CPUs (nproc)", f"{cpus} ({_cpu_model()})"),
        ("Memory", f"{_memory_gib():.1f} GiB"),
        ("Kernel", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("kopf / kubernetes client", f"{_pkg('kopf')} / {_pkg('kubernetes')}"),
        ("Kubernetes (apiserver, kubectl)", f"{K8S_VERSION}, kwok {KWOK_VERSION}"),
        ("etcd", etcd),
        ("Prometheus", prom),
    ]
    lines = ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


INTRO = """\
# Benchmarks

The latencies that matter to someone running a canary, measured with the real operator (`modelrollout run`,
a child process) against a real local control plane (etcd, kube-apiserver, controller-manager, scheduler,
kwok; see `devenv.localenv.controlplane`), a real Prometheus (Debian's, 1 s scrape) and a real exporter
(`compat_probe.refserver`). They are in `bench/`, not in the test suite: the suite makes no timed assertions.
DESIGN.md §7 lists what is measured; the scale benchmark runs N rollouts at once on one operator
(N = 100, 500, 1000, one environment each); the peer benchmark runs this operator and Argo Rollouts side
by side on one control plane (the same scale and breach scenarios, their ratios against the targets).

Every benchmark starts its own environment in a temporary directory, runs its trials one after another on
one control plane (one namespace, a new rollout name per trial, the previous rollout deleted), and stops
every process it started before it returns (it checks that no child process is left). A warm-up trial runs
first and is not counted. Intervals are measured with one clock (`time.monotonic()`); apiserver audit-log
timestamps (wall clock, µs), used only for the breakdowns, are moved onto it with the `time.time()` offset.
p50/p99 interpolate linearly between order statistics; with 20 trials p99 lies between the two slowest.
The machine may be shared with other work: each section gives the load average at the starts of its trials,
and latencies on a loaded machine (load above the CPU count) are markedly longer.
"""

RERUN = """\
## Rerun

```sh
make bench                                   # every benchmark; rewrites this file
PYTHONPATH=operator python -m bench.run --trials 40
PYTHONPATH=operator python -m bench.breach_to_stable --trials 20 --update-docs   # one benchmark, its section
PYTHONPATH=operator python -m bench.approve_to_shift --trials 20 --update-docs
PYTHONPATH=operator python -m bench.rollback_path --trials 20 --update-docs
PYTHONPATH=operator python -m bench.scale --n 100 500 1000 --update-docs    # or: make bench-scale
PYTHONPATH=operator python -m bench.peer --n 100 300 --update-docs         # or: make bench-peer
```

Needs what the integration tests need: the control plane binaries (`make controlplane`, cached outside the
clone), Debian's `etcd` and `prometheus`. `--keep` keeps the temporary directory (operator log, audit log,
Prometheus data); it is also kept, and its path printed, when a benchmark fails. `--json FILE` writes the raw
per-trial numbers. `bench.peer` also needs Argo Rollouts' controller, which it builds on demand
(`hack/argo/build.sh`, cached outside the clone like the control plane; not part of bootstrap).
"""


def _begin(name: str) -> str:
    return f"<!-- BEGIN bench:{name} -->"


def _end(name: str) -> str:
    return f"<!-- END bench:{name} -->"


def section(result: Result, machine: str) -> str:
    return f"{_begin(result.name)}\n{result.markdown(machine)}{_end(result.name)}\n"


def render_document(results: list[Result]) -> str:
    machine = machine_line()
    parts = [INTRO, machine_section()]
    parts += [section(r, machine) for r in results]
    parts.append(RERUN)
    return "\n".join(parts)


def write_document(results: list[Result], path: Path = DOC) -> None:
    """Rewrite the document; sections of benchmarks not in ``results`` (e.g. bench.tee_latency's) are kept."""
    text = render_document(results)
    if path.exists():
        ran = {r.name for r in results}
        old = path.read_text()
        for match in re.finditer(r"<!-- BEGIN bench:([\w-]+) -->.*?<!-- END bench:\1 -->\n?", old, re.S):
            if match.group(1) not in ran:
                text = replace_block(text, match.group(1), match.group(0))
    path.write_text(text)


def replace_block(text: str, name: str, block: str) -> str:
    """Put ``block`` (a whole marked section) in place of section ``name``, or before "## Rerun"."""
    pattern = re.compile(re.escape(_begin(name)) + r".*?" + re.escape(_end(name)) + r"\n?", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    marker = "## Rerun"
    return text.replace(marker, block + "\n" + marker, 1) if marker in text else text + "\n" + block


def update_section(result: Result, path: Path = DOC) -> None:
    """Replace this benchmark's section in place (the whole document if it has no such section yet)."""
    if not path.exists():
        write_document([result], path)
        return
    text = path.read_text()
    pattern = re.compile(re.escape(_begin(result.name)) + r".*?" + re.escape(_end(result.name)) + r"\n?", re.S)
    new = section(result, machine_line())
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text, count=1)
    else:
        marker = "## Rerun"
        text = text.replace(marker, new + "\n" + marker, 1) if marker in text else text + "\n" + new
    path.write_text(text)


def _parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _shared_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    """The options every benchmark module has: --update-docs, --json, --keep."""
    parser.add_argument("--update-docs", action="store_true", help="replace this section of docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help=json_help)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")


def _publish(result: Result, update_docs: bool) -> int:
    """Print the section; with ``update_docs`` also put it in docs/benchmarks.md."""
    print(result.markdown(machine_line()))
    if update_docs:
        update_section(result)
    return 0


def cli(argv: list[str] | None, *, name: str, doc: str | None, measure: Callable[..., tuple[Result, object]],
        default_trials: int, trials_help: str) -> int:
    """The command line of the benchmarks that run trials: run, print the section, optionally save it."""
    parser = _parser(name, doc)
    parser.add_argument("--trials", type=int, default=default_trials, help=trials_help)
    _shared_options(parser, "write the result with the raw per-trial numbers here")
    args = parser.parse_args(argv)
    result, _ = measure(max(args.trials, 1), keep=args.keep)
    if args.json:
        args.json.write_text(result.to_json())
    return _publish(result, args.update_docs)


def per_n_cli(argv: list[str] | None, *, name: str, doc: str | None, default_n: Sequence[int],
              options: Callable[[argparse.ArgumentParser], object],
              measure: Callable[[argparse.Namespace, Callable[[Mapping[str, Any]], None]], Result],
              render: Callable[[Mapping[str, Any]], Result]) -> int:
    """The command line of the benchmarks that run once per N (scale, peer): --n, the module's own ``options``,
    --update-docs, --json, --keep, --from-json. ``measure(args, save)`` runs and hands ``save`` the raw numbers
    after every N (written to --json at once: a later N that fails keeps the earlier ones); with --from-json
    nothing is measured and ``render`` makes the result from what --json saved. Prints the section."""
    parser = _parser(name, doc)
    parser.add_argument("--n", type=int, nargs="+", default=list(default_n), help="rollouts at once (one run each)")
    options(parser)
    _shared_options(parser, "write the raw numbers here (after every N)")
    parser.add_argument("--from-json", type=Path, help="measure nothing: render the runs saved with --json")
    args = parser.parse_args(argv)
    if args.from_json:
        return _publish(render(read_json(args.from_json)), args.update_docs)

    def save(raw: Mapping[str, Any]) -> None:
        if args.json:
            args.json.write_text(json.dumps(raw, indent=1))

    return _publish(measure(args, save), args.update_docs)
