"""Local test environment: a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok fake nodes) and a real Prometheus, all as plain processes bound to 127.0.0.1.

Used by the integration tests (tests/conftest.py) and by ``make cluster-up`` for the demo. No Docker.
"""
