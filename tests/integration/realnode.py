"""What the real-node test modules share: whether a real node can run here, a control plane of the module's own
with one real node (devenv.localenv.node) on it, and the host as it was before, to check the node's teardown.

Only one real node runs on a machine at a time (its bridge has a fixed name): ``preflight`` reports another.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv import node as localnode
from devenv.localenv.controlplane import ControlPlane, ControlPlaneError, built, ensure_binaries, start_control_plane

from ..conftest import _unavailable
from .conftest import apply_crd


def host_snapshot(workdir: Path) -> dict[str, object]:
    """What the node may change, read independently of the node module's own record."""
    sysctls = {}
    for name in localnode.SYSCTLS:
        path = Path("/proc/sys") / name.replace(".", "/")
        if path.exists():
            sysctls[name] = path.read_text().strip()
    return {
        "sysctls": sysctls,
        "hashsize": localnode.CONNTRACK_HASHSIZE.read_text().strip() if localnode.CONNTRACK_HASHSIZE.exists() else None,
        "nft_tables": sorted(localnode.nft_tables()),
        "netns": localnode.netns_entries(),
        "bridge": localnode.link_exists(localnode.BRIDGE),
        "paths": {p: os.path.lexists(p) for p in localnode.HOST_PATHS},
        "cgroups": [str(d) for d in localnode.cgroup_dirs() if d.exists()],
        "mounts": localnode.mounts_under(workdir),
    }


def require_real_node(what: str = "real node", *, builds: Iterable[str] = (),
                      problems: Iterable[str] = ()) -> dict[str, Path]:
    """The bin dirs of ``builds`` (hack/NAME/build.sh, by NAME), once the node's preflight passes and the control
    plane's and node's binaries are there; otherwise the module is skipped (failed under
    MODELROLLOUT_REQUIRE_CLUSTER=1) with every problem found, ``problems`` (the caller's own) among them."""
    found = [*localnode.preflight(), *problems]
    bins: dict[str, Path] = {}
    try:
        ensure_binaries()
        localnode.ensure_node_binaries()
        bins = {name: built(name) for name in builds}
    except (ControlPlaneError, localnode.NodeError) as e:
        found.append(str(e))
    if found:
        _unavailable(f"{what} unavailable: " + "; ".join(found))
    return bins


@dataclass
class NodeEnv:
    cp: ControlPlane
    node: localnode.Node
    before: dict[str, object]
    """The host as the module saw it before the node came up."""


@contextmanager
def node_env(tmp_path_factory: pytest.TempPathFactory, name: str, *, crd: bool = False,
             **up: Any) -> Iterator[NodeEnv]:
    """A control plane of its own (no kwok nodes, the apiserver able to reach the kubelet), with the ModelRollout
    CRD if ``crd``, and one real node (``up`` passed to devenv.localenv.node.up); afterwards the node is down
    (whatever a test took down already stays down) and the control plane stopped."""
    cp = start_control_plane(tmp_path_factory.mktemp(f"{name}-cp"), nodes=0, kubelet_access=True)
    try:
        if crd:
            apply_crd(cp)
        workdir = tmp_path_factory.mktemp(f"{name}-node")
        before = host_snapshot(workdir)
        node = localnode.up(cp, workdir, **up)
        print(f"\nnode up in {node.started_seconds:.1f}s; RSS KiB {node.rss_kib()}")
        try:
            yield NodeEnv(cp=cp, node=node, before=before)
        finally:
            done = node.down()
            print("node down: " + "; ".join(done))
    finally:
        cp.stop()


def down_leaves_nothing(node: localnode.Node, before: dict[str, object]) -> localnode.NodeState:
    """Take the node down and check nothing of it is left: no leftovers by its own record, the host as ``before``,
    no process naming its workdir. Returns its final record."""
    workdir = node.workdir
    done = node.down()
    print("down: " + "; ".join(done))
    state = localnode.NodeState.load_done(workdir)
    assert localnode.leftovers(state) == []
    assert host_snapshot(workdir) == before
    assert not localnode.processes_mentioning(str(workdir))
    return state
