"""The model config a revision runs with: ``spec.model.config`` after ``configMigrations``, rendered into a
ConfigMap per revision and mounted into the model server's containers. Pure."""

from __future__ import annotations

import json
from typing import Any

from modelrollout import api
from modelrollout.core.preflight import migrate

VOLUME = "modelrollout-model-config"
MOUNT = "/etc/modelrollout"
KEY = "config.json"
ENV = "MODEL_CONFIG_PATH"


def config_map_name(rollout: str, revision: str) -> str:
    return f"{rollout}-config-{revision}"


def rendered(model: api.ModelInfo) -> str:
    """The effective config as JSON: renamed keys under their new names."""
    return json.dumps(migrate(model.config, model.config_migrations), sort_keys=True, indent=2)


def mount(pod: dict[str, Any], name: str) -> None:
    """Mount ConfigMap ``name`` at /etc/modelrollout in every container, with MODEL_CONFIG_PATH."""
    spec = pod.setdefault("spec", {})
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") != VOLUME]
    volumes.append({"name": VOLUME, "configMap": {"name": name}})
    spec["volumes"] = volumes
    for container in spec.get("containers") or []:
        mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") != VOLUME]
        mounts.append({"name": VOLUME, "mountPath": MOUNT, "readOnly": True})
        container["volumeMounts"] = mounts
        env = [e for e in container.get("env") or [] if e.get("name") != ENV]
        env.append({"name": ENV, "value": f"{MOUNT}/{KEY}"})
        container["env"] = env
