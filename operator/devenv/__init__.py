"""The development environment: what the tests, the benchmarks and ``make demo`` run, never the operator.

- :mod:`devenv.localenv` - a real local control plane, Prometheus, Flux, model servers and the operator as
  plain processes on 127.0.0.1, and the fault proxy the fault tests put in front of the apiserver;
- :mod:`devenv.demo` - ``make demo``: a complete rollout story on that environment.

It runs from a checkout (``PYTHONPATH=operator``) and ships neither in the wheel (pyproject.toml excludes it)
nor in the images (the Dockerfiles copy only ``modelrollout`` and ``compat_probe``). It may import
``modelrollout``; ``modelrollout`` may not import it (an import-linter contract).
"""
