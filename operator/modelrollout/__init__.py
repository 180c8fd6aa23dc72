"""ModelRollout: safe, observable, reversible upgrades of ML model servers on Kubernetes.

Layers: :mod:`modelrollout.api` (the contract), :mod:`modelrollout.core` (pure decisions),
:mod:`modelrollout.routers` and :mod:`modelrollout.metrics` (one module per router / metric source),
:mod:`modelrollout.observe` / :mod:`modelrollout.apply` (I/O), :mod:`modelrollout.handlers` (kopf).
"""
