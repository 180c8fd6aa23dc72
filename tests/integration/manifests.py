"""Manifests for integration tests, built as YAML text."""

from __future__ import annotations

import json
from typing import Any


def nginx(name: str) -> dict[str, Any]:
    """``spec.traffic`` for the root Service ``name`` behind the NGINX Ingress ``name``."""
    return {"traffic": {"service": {"name": name}, "ingress": {"name": name}}}


def service(name: str) -> str:
    """The root Service ``name``, selecting the pods of every revision by the shared labels (an NGINX Ingress routes to
    ``NAME-stable``, never to it: see :func:`ingress`)."""
    selector: dict[str, str] = {"app": name}
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                       "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})


def ingress(name: str, backend: str) -> str:
    return json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": f"{name}.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": backend, "port": {"number": 80}}}}]}}]},
    })


def rollout(name: str, *, image: str = "model:1", steps: list[dict[str, Any]] | None = None, replicas: int = 4,
            ingress: bool = False, scale_down_delay: str | None = None, **spec: Any) -> str:
    """A ModelRollout; ``scale_down_delay``: how long the previous stable's Deployment stays after a promotion
    (``strategy.canary.scaleDownDelay``; the CRD's default when None)."""
    traffic: dict[str, Any] = {"service": {"name": name}}
    if ingress:
        traffic["ingress"] = {"name": name}
    body: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "model", "image": image,
                                              "ports": [{"containerPort": 8080}]}]}},
        "traffic": traffic,
        "strategy": {"canary": {"steps": steps or [{"setWeight": 50}, {"setWeight": 100}]}},
    }
    if scale_down_delay is not None:
        body["strategy"]["canary"]["scaleDownDelay"] = scale_down_delay
    body.update(spec)
    return json.dumps({"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout",
                       "metadata": {"name": name}, "spec": body})
