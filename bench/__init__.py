"""Benchmarks of the real operator against a real local control plane, Prometheus and exporters.

Not part of the test suite (no timed assertions there). ``make bench`` (``python -m bench.run``) runs every
benchmark and rewrites ``docs/benchmarks.md``; each benchmark also runs alone::

    PYTHONPATH=operator python -m bench.breach_to_stable [--trials 20] [--update-docs]
    PYTHONPATH=operator python -m bench.approve_to_shift [--trials 20] [--update-docs]

Each one starts its own control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok), the
operator (``modelrollout run``) and, where it needs one, Prometheus with a 1 s scrape, all in a temporary
directory, and stops every process it started before it returns.
"""
