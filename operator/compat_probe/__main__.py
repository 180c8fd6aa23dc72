"""``compat-probe``: the compatibility-probe sidecar's command line (see docs/compat-probe.md)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import yaml
from pydantic import ValidationError

from compat_probe.contract import Contract
from compat_probe.server import (
    Identity,
    ProbeApp,
    ProbeSettings,
    load_config_info,
    load_dependencies,
)
from compat_probe.shadow import ShadowSpec

log = logging.getLogger("compat_probe")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction within [0, 1], got {text!r}")
    return value


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    return host.strip("[]") or "127.0.0.1", number


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="compat-probe",
        description="Replay a model API contract against a model server and export compatibility metrics.",
    )
    parser.add_argument(
        "--target", required=True, help="URL of the local model server, e.g. http://127.0.0.1:8080"
    )
    parser.add_argument("--contract", type=Path, help="contract YAML (golden requests and expected shapes)")
    parser.add_argument("--interval", type=_positive, default=15.0, help="seconds between replays (15)")
    parser.add_argument(
        "--timeout", type=_positive, help="per-request timeout in seconds (default: the contract's, 2)"
    )
    parser.add_argument(
        "--listen", type=_listen, default=("127.0.0.1", 9109), help="HOST:PORT (127.0.0.1:9109)"
    )
    parser.add_argument("--rollout", default=env.get("MODELROLLOUT_ROLLOUT", "unknown"))
    parser.add_argument("--track", default=env.get("MODELROLLOUT_TRACK", "unknown"), help="stable | canary")
    parser.add_argument("--revision", default=env.get("MODELROLLOUT_REVISION", "unknown"))
    parser.add_argument("--baseline-ms", type=float, help="fixed latency baseline for the impact metric")
    parser.add_argument("--baseline-query", help="PromQL giving the baseline in ms (needs --prometheus-url)")
    parser.add_argument("--prometheus-url", help="Prometheus base URL for --baseline-query")
    parser.add_argument(
        "--dependency", action="append", default=[], metavar="PACKAGE", help="installed package to report"
    )
    parser.add_argument("--dependencies-file", type=Path, help="YAML/JSON manifest of package versions")
    parser.add_argument(
        "--config-file", type=Path, help="YAML/JSON model config to export as model_config_info"
    )
    parser.add_argument("--shadow-target", help="stable track URL: turns on tee mode (proxy on --listen)")
    parser.add_argument(
        "--shadow-fraction", type=_fraction, default=1.0, help="share of proxied requests copied (1.0)"
    )
    parser.add_argument("--shadow-window", type=int, default=500, help="comparisons kept in the window (500)")
    parser.add_argument(
        "--shadow-path",
        action="append",
        default=[],
        metavar="PREFIX",
        help="only copy paths with this prefix",
    )
    parser.add_argument("--shadow-scores-path", default="data.scores", help="dotted path to the scores")
    parser.add_argument(
        "--shadow-label-path", default="data.label", help="dotted path to the top-1 label ('' = arg-max)"
    )
    parser.add_argument(
        "--shadow-protocol",
        choices=["envelope", "open-inference-v2", "kserve-v1", "openai-chat"],
        help="how answers are compared (default: the contract's protocol, else envelope)",
    )
    parser.add_argument("--shadow-output", help="open-inference-v2: compare only this output tensor")
    parser.add_argument(
        "--proxy-timeout", type=_positive, default=30.0, help="timeout of proxied requests (30)"
    )
    parser.add_argument(
        "--once", action="store_true", help="replay once, print the JSON report, exit 0 iff 1.0"
    )
    parser.add_argument("--log-level", default=env.get("COMPAT_PROBE_LOG_LEVEL", "INFO"))
    return parser


def settings_from_args(args: argparse.Namespace) -> ProbeSettings:
    contract = None
    if args.contract is not None:
        contract = Contract.from_yaml(args.contract.read_text(encoding="utf-8"))
    if args.baseline_query is not None and args.prometheus_url is None:
        raise ValueError("--baseline-query needs --prometheus-url")
    if args.shadow_window < 1:
        raise ValueError("--shadow-window must be at least 1")
    host, port = args.listen
    return ProbeSettings(
        target=args.target,
        identity=Identity(rollout=args.rollout, track=args.track, revision=args.revision),
        contract=contract,
        interval=args.interval,
        timeout=args.timeout,
        baseline_ms=args.baseline_ms,
        baseline_query=args.baseline_query,
        prometheus_url=args.prometheus_url,
        dependencies=load_dependencies(args.dependency, args.dependencies_file),
        config=load_config_info(args.config_file),
        listen_host=host,
        listen_port=port,
        shadow_target=args.shadow_target,
        shadow_fraction=args.shadow_fraction,
        shadow_spec=ShadowSpec(
            scores_path=args.shadow_scores_path,
            label_path=args.shadow_label_path or None,
            protocol=args.shadow_protocol or (contract.protocol if contract and contract.protocol else "envelope"),
            output=args.shadow_output,
        ),
        shadow_window=args.shadow_window,
        shadow_paths=tuple(args.shadow_path),
        proxy_timeout=args.proxy_timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_from_args(args)
    except (OSError, ValueError, ValidationError, yaml.YAMLError) as exc:
        print(f"compat-probe: configuration error: {exc}", file=sys.stderr)
        return 2

    app = ProbeApp(settings)
    if args.once:
        if app.runner is None:
            print("compat-probe: --once needs --contract", file=sys.stderr)
            return 2
        app.run_once()
        print(json.dumps(app.compatibility(), indent=2, sort_keys=True))
        report, _ = app.latest()
        return 0 if report is not None and report.score == 1.0 else 1

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        host, port = app.start()
    except OSError as exc:
        print(
            f"compat-probe: cannot listen on {settings.listen_host}:{settings.listen_port}: {exc}",
            file=sys.stderr,
        )
        return 2
    mode = f", tee to {settings.target} and {settings.shadow_target}" if settings.shadow_target else ""
    print(f"compat-probe listening on http://{host}:{port} (target {settings.target}{mode})", flush=True)
    stop.wait()
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
