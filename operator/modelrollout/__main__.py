"""``modelrollout``: run the operator, print the CRD, print the version, serve the dashboard."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelrollout.core.lease import Timing


def _version() -> str:
    try:
        return version("modelrollout")
    except PackageNotFoundError:
        return "0.0.0+unknown"


MALLOC_ARENAS = 2
"""glibc malloc arenas the operator's threads share (``M_ARENA_MAX``), unless ``MALLOC_ARENA_MAX`` sets it."""


def _share_malloc_arenas() -> None:
    """Cap glibc's malloc arenas (by default up to 8 per CPU, one per thread that allocates at once): the reconcile
    workers (``--workers``) parse and build JSON bodies in parallel, and freed memory left in many arenas is
    memory the process keeps. Without glibc (or ``mallopt``) nothing changes."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-8, MALLOC_ARENAS)  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        return


def run(args: argparse.Namespace) -> int:
    _share_malloc_arenas()  # before any thread starts
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
    if not args.verbose:  # kopf logs "Handler '...' succeeded." at INFO for every watch event of every kind
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address)
    memo = kopf.Memo()
    memo.workers = args.workers
    memo.prometheus_address = args.prometheus_address
    memo.notify_webhook = args.notify_webhook or None
    options: dict[str, Any] = dict(standalone=True, clusterwide=not args.namespace, namespaces=args.namespace or (),
                                   liveness_endpoint=args.liveness or None, memo=memo)
    if args.leader_elect:  # several replicas: wait for the Lease, then run kopf (docs/install.md)
        from modelrollout.leader import Election, default_identity, default_namespace, run_elected

        election = Election(args.leader_elect_namespace or default_namespace(), args.leader_elect_lease_name,
                            default_identity(), _leader_timing(args))
        def operator(stop: Any, fence: Any) -> Any:
            memo.fence = fence  # every write of the cluster passes it (handlers.startup: Kube.connect)
            return kopf.operator(**options, stop_flag=stop)

        return run_elected(election, operator, args.liveness)
    kopf.run(**options)
    return 0


def _seconds(text: str) -> float:
    """A duration on the command line: ``15s``, ``1m``, ``500ms`` or plain seconds (``2.5``)."""
    from modelrollout.leader import seconds

    try:
        return seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _leader_timing(args: argparse.Namespace) -> Timing:
    from modelrollout.core.lease import Timing

    return Timing(args.leader_elect_lease_duration, args.leader_elect_renew_deadline, args.leader_elect_retry_period)


def _revisions(filename: str) -> int:
    from pathlib import Path

    import yaml

    from modelrollout import api
    from modelrollout.core.revision import revision_of

    text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    found = 0
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == api.KIND:
            spec = doc.get("spec") or {}
            name = (doc.get("metadata") or {}).get("name", "")
            print(name, revision_of(spec.get("template") or {}, spec.get("model")))
            found += 1
    if not found:
        print(f"no {api.KIND} in {filename}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dashboard"]:  # the plugin's command: `modelrollout dashboard` == `kubectl modelrollout dashboard`
        from modelrollout.plugin import main as plugin_main

        return plugin_main(argv)
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
    p_run.add_argument("--notify-webhook", default=os.environ.get("MODELROLLOUT_NOTIFY_WEBHOOK", ""),
                       help="webhook for rollout events of rollouts without spec.notify.webhook "
                       "(env MODELROLLOUT_NOTIFY_WEBHOOK; prefer the env, argv is visible in ps)")
    p_run.add_argument("--leader-elect", action=argparse.BooleanOptionalAction,
                       default=os.environ.get("MODELROLLOUT_LEADER_ELECT", "").lower() in ("1", "true", "yes"),
                       help="run kopf only while holding a coordination.k8s.io Lease, for several replicas "
                       "(env MODELROLLOUT_LEADER_ELECT)")
    p_run.add_argument("--leader-elect-namespace", default="",
                       help="namespace of the Lease (default: POD_NAMESPACE, else the pod's own namespace)")
    p_run.add_argument("--leader-elect-lease-name", default="modelrollout-leader", help="name of the Lease")
    p_run.add_argument("--leader-elect-lease-duration", type=_seconds, default=15.0,
                       help="a standby takes over a Lease not renewed for this long (15s)")
    p_run.add_argument("--leader-elect-renew-deadline", type=_seconds, default=10.0,
                       help="the leader exits (code 1) when it could not renew for this long (10s)")
    p_run.add_argument("--leader-elect-retry-period", type=_seconds, default=2.0,
                       help="how often to renew the Lease, or try to acquire it (2s)")
    p_run.add_argument("--verbose", "-v", action="store_true",
                       help="debug logs, and kopf's line for every watch event it handled")
    sub.add_parser("crd", help="print the ModelRollout CRD (YAML)")
    p_rev = sub.add_parser("revision", help="print NAME REVISION for each ModelRollout in a manifest (the revision "
                           "its template and model will have, for approve=REVISION-STEP or abort=REVISION in git)")
    p_rev.add_argument("-f", "--filename", required=True, help="a YAML file of one or more documents ('-': stdin)")
    sub.add_parser("version", help="print the version")
    sub.add_parser("dashboard", help="the rollouts' live web page on 127.0.0.1 (see modelrollout dashboard --help)")
    args = parser.parse_args(argv)
    if args.command == "run" and args.leader_elect:
        try:
            _leader_timing(args)
        except ValueError as exc:
            parser.error(f"--leader-elect: {exc}")
    if args.command == "run":
        return run(args)
    if args.command == "revision":
        return _revisions(args.filename)
    if args.command == "crd":
        from modelrollout.crdgen import main as crd_main

        return crd_main()
    print(_version())
    return 0


if __name__ == "__main__":
    sys.exit(main())
