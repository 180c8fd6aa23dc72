"""Manifests for integration tests, built as YAML text."""

from __future__ import annotations

import json
from typing import Any


def nginx(name: str) -> dict[str, Any]:
    """``spec.traffic`` for the root Service ``name`` behind the NGINX Ingress ``name``."""
    return {"traffic": {"service": {"name": name}, "ingress": {"name": name}}}


def service(name: str, *, stable_only: bool = False) -> str:
    selector: dict[str, str] = {"app": name}
    if stable_only:
        selector["modelrollout.io/track"] = "stable"
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
            ingress: bool = False, **spec: Any) -> str:
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
    body.update(spec)
    return json.dumps({"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout",
                       "metadata": {"name": name}, "spec": body})
