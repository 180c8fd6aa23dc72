"""Compatibility-probe sidecar for ModelRollout.

Runs next to a model server (one per pod, both tracks) and exports, per pod, the compatibility metrics the
operator's analysis reads from Prometheus (DESIGN.md section 5), every series labelled with
``rollout``, ``track`` and ``revision``:

- ``model_api_compatibility_score``: share of golden contract checks passed (NaN: no verdict);
- ``model_compat_latency_impact_ms``: p50 latency of the golden set minus a baseline (NaN: no baseline);
- ``model_dependency_info{package,version}`` and ``model_config_info{key,value}``: what the revision
  runs with;
- ``model_shadow_prediction_diff``, ``model_shadow_mismatch_rate``, ``model_shadow_samples_total``: stable vs
  canary answers to the same live requests, in tee mode.

Modules:

- :mod:`compat_probe.contract` - PURE, no I/O: the contract model and ``evaluate``/``score``;
- :mod:`compat_probe.shadow` - PURE, no I/O: prediction comparison and the rolling window;
- :mod:`compat_probe.server` - I/O: replay loop, tee proxy, HTTP endpoints;
- :mod:`compat_probe.refserver` - I/O: a reference model server for tests and the demo;
- :mod:`compat_probe.__main__` - the ``compat-probe`` command line.
"""

from __future__ import annotations

__all__: list[str] = []
