from __future__ import annotations

from typing import Any

from modelrollout import api
from modelrollout.core.compat import default_metrics, effective, inject
from modelrollout.core.validate import parse_spec

from .sim import spec_dict


def raw(**extra: Any) -> dict[str, Any]:
    return spec_dict([{"setWeight": 50}, {"setWeight": 100}], **extra)


def test_three_lines_of_spec_give_compatibility_analysis() -> None:
    spec, problem = parse_spec(raw(compatProbe={"contract": {"name": "c"}},
                                   analysis={"prometheus": {"address": "http://p:9090"}}))
    assert problem is None and spec is not None and spec.analysis is not None
    [metric] = spec.analysis.metrics
    assert metric.name == "api-compatibility" and metric.min == 0.99 and metric.on_failure == "rollback"
    assert 'revision="{{revision}}"' in metric.query and "model_api_compatibility_score" in metric.query


def test_thresholds_add_metrics_and_user_metrics_win() -> None:
    probe = api.CompatProbe.model_validate({"contract": {"name": "c"},
                                            "metrics": {"maxLatencyImpactMs": 50, "maxShadowMismatchRate": 0.05}})
    assert [m.name for m in default_metrics(probe)] == ["api-compatibility", "latency-impact-ms",
                                                        "shadow-mismatch-rate"]
    spec = api.ModelRolloutSpec.model_validate(raw(
        compatProbe={"contract": {"name": "c"}},
        analysis={"prometheus": {"address": "http://p:9090"},
                  "metrics": [{"name": "api-compatibility", "query": "q", "min": 0.5}]}))
    metrics = {m.name: m for m in effective(spec).analysis.metrics}  # type: ignore[union-attr]
    assert metrics["api-compatibility"].min == 0.5 and metrics["api-compatibility"].query == "q"


def test_probe_without_analysis_is_invalid() -> None:
    _, problem = parse_spec(raw(compatProbe={"contract": {"name": "c"}}))
    assert problem is not None and "spec.compatProbe" in problem


def test_inject_adds_sidecar_volume_and_scrape_annotations_once() -> None:
    probe = api.CompatProbe.model_validate({"contract": {"name": "chat-contract"}, "targetPort": 8000,
                                            "baselineMs": 12})
    pod: dict[str, Any] = {"spec": {"containers": [{"name": "model", "image": "m"}]}}
    for _ in range(2):
        inject(pod, probe, rollout="chat", track="canary", revision="abc")
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["model", "compat-probe"]
    sidecar = pod["spec"]["containers"][1]
    assert "http://127.0.0.1:8000" in sidecar["args"] and "--baseline-ms" in sidecar["args"]
    assert sidecar["args"][sidecar["args"].index("--track") + 1] == "canary"
    assert pod["spec"]["volumes"] == [{"name": "compat-probe-contract", "configMap": {"name": "chat-contract"}}]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9109"


def test_model_config_is_migrated_rendered_and_mounted() -> None:
    import json

    from modelrollout.core.modelconfig import mount, rendered

    model = api.ModelInfo.model_validate({"config": {"max_seq_len": 4096, "amp": True},
                                          "configMigrations": [{"from": "max_seq_len", "to": "max_length"}]})
    assert json.loads(rendered(model)) == {"max_length": 4096, "amp": True}
    pod: dict[str, Any] = {"spec": {"containers": [{"name": "model", "image": "m", "env": [{"name": "A",
                                                                                            "value": "1"}]}]}}
    mount(pod, "chat-config-abc")
    mount(pod, "chat-config-abc")
    c = pod["spec"]["containers"][0]
    assert c["volumeMounts"] == [{"name": "modelrollout-model-config", "mountPath": "/etc/modelrollout",
                                  "readOnly": True}]
    assert {"name": "MODEL_CONFIG_PATH", "value": "/etc/modelrollout/config.json"} in c["env"]
    assert len(pod["spec"]["volumes"]) == 1
