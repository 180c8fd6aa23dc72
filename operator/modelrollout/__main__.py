"""``modelrollout``: run the operator, print the CRD, print the version."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("modelrollout")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    import modelrollout.handlers  # noqa: F401  (registers the handlers)

    if args.log_format == "json":
        kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON)
    else:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    memo = kopf.Memo()
    memo.workers = args.workers
    memo.prometheus_address = args.prometheus_address
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness or None,
        memo=memo,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelrollout", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the operator (kopf) against the cluster in KUBECONFIG or in-cluster")
    p_run.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    p_run.add_argument("--metrics-port", type=int, default=0, help="serve operator metrics on this port")
    p_run.add_argument("--metrics-address", default="0.0.0.0", help="address for --metrics-port")
    p_run.add_argument("--liveness", default="", help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p_run.add_argument("--workers", type=int, default=64, help="threads for Kubernetes and Prometheus calls")
    p_run.add_argument("--log-format", choices=("plain", "json"),
                       default=os.environ.get("MODELROLLOUT_LOG_FORMAT", "plain"), help="log format")
    p_run.add_argument("--prometheus-address", default=os.environ.get("MODELROLLOUT_PROMETHEUS_ADDRESS", ""),
                       help="Prometheus for rollouts whose spec.analysis has no prometheus.address")
    p_run.add_argument("--verbose", "-v", action="store_true")
    sub.add_parser("crd", help="print the ModelRollout CRD (YAML)")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "crd":
        from modelrollout.crdgen import main as crd_main

        return crd_main()
    print(_version())
    return 0


if __name__ == "__main__":
    sys.exit(main())
