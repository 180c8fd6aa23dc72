"""The compat-probe's default metrics and sidecar container, derived from spec.compatProbe. Pure."""

from __future__ import annotations

from typing import Any

from modelrollout import api

SELECTOR = 'rollout="{{rollout}}",revision="{{revision}}",track="canary"'
CONTAINER = "compat-probe"
VOLUME = "compat-probe-contract"
MOUNT = "/etc/compat-probe"


def default_metrics(probe: api.CompatProbe) -> list[api.Metric]:
    """api-compatibility always; latency-impact-ms and shadow-mismatch-rate when their threshold is set."""
    out = [api.Metric(name="api-compatibility", query=f"min(model_api_compatibility_score{{{SELECTOR}}})",
                      min=probe.metrics.min_score, failure_limit=1, on_failure="rollback")]
    if probe.metrics.max_latency_impact_ms is not None:
        out.append(api.Metric(name="latency-impact-ms", query=f"max(model_compat_latency_impact_ms{{{SELECTOR}}})",
                              max=probe.metrics.max_latency_impact_ms, on_failure="pause"))
    if probe.metrics.max_shadow_mismatch_rate is not None:
        out.append(api.Metric(name="shadow-mismatch-rate", query=f"max(model_shadow_mismatch_rate{{{SELECTOR}}})",
                              max=probe.metrics.max_shadow_mismatch_rate, on_failure="pause"))
    return out


def effective(spec: api.ModelRolloutSpec) -> api.ModelRolloutSpec:
    """The spec with the probe's default metrics added to spec.analysis (user metrics of the same name win)."""
    if spec.compat_probe is None or spec.analysis is None:
        return spec
    names = {m.name for m in spec.analysis.metrics}
    extra = [m for m in default_metrics(spec.compat_probe) if m.name not in names]
    analysis = spec.analysis.model_copy(update={"metrics": [*spec.analysis.metrics, *extra]})
    return spec.model_copy(update={"analysis": analysis})


def inject(pod: dict[str, Any], probe: api.CompatProbe, *, rollout: str, track: str, revision: str) -> None:
    """Add the sidecar, its contract volume and scrape annotations to a pod template (in place)."""
    spec = pod.setdefault("spec", {})
    containers = [c for c in spec.get("containers") or [] if c.get("name") != CONTAINER]
    args = ["--target", f"http://127.0.0.1:{probe.target_port}", "--contract", f"{MOUNT}/{probe.contract_key}",
            "--listen", f"0.0.0.0:{probe.port}", "--interval", str(int(probe.interval.total_seconds()) or 1),
            "--rollout", rollout, "--track", track, "--revision", revision]
    if probe.baseline_ms is not None:
        args += ["--baseline-ms", f"{probe.baseline_ms:g}"]
    containers.append({
        "name": CONTAINER,
        "image": probe.image,
        "args": args,
        "ports": [{"name": "compat-metrics", "containerPort": probe.port}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "volumeMounts": [{"name": VOLUME, "mountPath": MOUNT, "readOnly": True}],
        "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
    })
    spec["containers"] = containers
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") != VOLUME]
    volumes.append({"name": VOLUME, "configMap": {"name": probe.contract.name}})
    spec["volumes"] = volumes
    meta = pod.setdefault("metadata", {})
    meta["annotations"] = {**(meta.get("annotations") or {}), "prometheus.io/scrape": "true",
                           "prometheus.io/port": str(probe.port), "prometheus.io/path": "/metrics"}
