"""bench.common cuts one rollout's audit-logged requests into reconciles by the order a reconcile writes in."""

from __future__ import annotations

from bench.common import Request, reconciles


def req(verb: str, resource: str, subresource: str = "") -> Request:
    return Request(0.0, 0.0, verb, resource, subresource, "m", "OpenAPI-Generator")


def test_reconciles_are_cut_where_the_write_order_starts_again() -> None:
    a = [req("get", "ingresses"), req("patch", "ingresses"), req("patch", "modelrollouts", "status"),
         req("create", "events")]
    b = [req("get", "deployments"), req("patch", "deployments"), req("patch", "modelrollouts", "status")]
    c = [req("patch", "modelrollouts", "status"), req("patch", "modelrollouts"), req("create", "events"),
         req("create", "events")]
    d = [req("get", "ingresses")]
    assert reconciles([*a, *b, *c, *d]) == [a, b, c, d]


def test_a_reconcile_without_writes_leaves_its_reads_with_the_next_one() -> None:
    reads = [req("get", "ingresses"), req("get", "services")]
    step = [req("patch", "ingresses"), req("patch", "modelrollouts", "status")]
    assert reconciles([*reads, *step]) == [[*reads, *step]]
