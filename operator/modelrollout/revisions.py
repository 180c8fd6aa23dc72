"""Recorded revisions (I/O): the template and model of recent stable revisions, for ``rollback-to``.

Kept in the owned ConfigMap ``NAME-revisions`` (one key per revision, JSON ``{"template", "model"}``), the
last ``keepRevisions + 1`` of them, oldest first in the ``modelrollout.io/order`` annotation.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from modelrollout.context import RolloutContext
from modelrollout.core.revision import fitting
from modelrollout.kube import LABEL_ROLLOUT, MANAGED_BY, Body, JsonPatchOp, Kube

ORDER = "modelrollout.io/order"

log = logging.getLogger("modelrollout.revisions")


def config_map_name(rollout: str) -> str:
    return f"{rollout}-revisions"


def record(ctx: RolloutContext, rollout: Body, revision: str, keep: int) -> None:
    """Record ``revision``'s template and model, keeping the last ``keep + 1`` that fit in one ConfigMap (a large
    ``spec.model.config`` leaves room for fewer; one too large to record at all is left out, with a warning,
    rather than refused by the apiserver at every promotion)."""
    spec = rollout.get("spec") or {}
    entry = json.dumps({"template": spec.get("template"), "model": spec.get("model")}, sort_keys=True)
    name = config_map_name(ctx.name)
    if not fitting([revision], {revision: entry}, keep):
        log.warning("%s/%s: revision %s is not recorded for rollback-to: its template and model (%d bytes) do not "
                    "fit in ConfigMap %s", ctx.namespace, ctx.name, revision, len(entry.encode()), name)
        return
    cm = ctx.kube.config_map(ctx.namespace, name)
    if cm is None:
        ctx.kube.create_config_map({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ctx.namespace, "ownerReferences": [ctx.owner],
                         "labels": {LABEL_ROLLOUT: ctx.name, **MANAGED_BY},
                         "annotations": {ORDER: json.dumps([revision])}},
            "data": {revision: entry},
        })
        return
    data = dict(cm.get("data") or {})
    if revision in data:
        return
    data[revision] = entry
    order = fitting([*json.loads((cm["metadata"].get("annotations") or {}).get(ORDER, "[]")), revision], data, keep)
    cm["data"] = {r: data[r] for r in order}
    cm["metadata"].setdefault("annotations", {})[ORDER] = json.dumps(order)
    ctx.kube.replace_config_map(cm)  # resourceVersion guards it


def recorded(kube: Kube, namespace: str, rollout: str) -> tuple[str, ...]:
    cm = kube.config_map(namespace, config_map_name(rollout))
    return tuple(sorted((cm.get("data") or {}).keys())) if cm is not None else ()


def restore(ctx: RolloutContext, rollout: Body, revision: str) -> None:
    """Put the recorded template and model back into the spec (a JSON patch replacing both)."""
    cm = ctx.kube.existing_config_map(ctx.namespace, config_map_name(ctx.name))
    entry: dict[str, Any] = json.loads((cm.get("data") or {})[revision])
    ops: list[JsonPatchOp] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rollout["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/spec/template", "value": entry["template"]},
    ]
    if entry.get("model") is not None:
        ops.append({"op": "add", "path": "/spec/model", "value": entry["model"]})
    elif "model" in (rollout.get("spec") or {}):
        ops.append({"op": "remove", "path": "/spec/model"})
    ctx.kube.patch_rollout(ctx.namespace, ctx.name, ops)
