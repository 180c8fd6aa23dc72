"""The pure core of the operator: decisions as functions of data, with no I/O.

Nothing in this package imports kopf, kubernetes, an HTTP client or the clock: time comes in as an
argument, the world comes in as frozen :class:`~modelrollout.core.model.Observed` data, and out come
frozen decisions that :mod:`modelrollout.apply` carries out. import-linter enforces the boundary
(``lint-imports``, contract in pyproject.toml).
"""
