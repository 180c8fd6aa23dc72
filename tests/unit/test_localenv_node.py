"""The real node's pure parts: configs, the firewall table, and the parsers down() relies on."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from devenv.localenv import node as realnode
from devenv.localenv.controlplane import SERVICE_CIDR


def _state(tmp_path: Path) -> realnode.NodeState:
    return realnode.NodeState(workdir=str(tmp_path))


def test_gateway_is_the_first_address_of_the_subnet() -> None:
    assert realnode.gateway("172.30.254.0/24") == "172.30.254.1"
    assert ipaddress.ip_network(realnode.NODE_SUBNET).is_private


def test_kubelet_config_keeps_everything_on_the_machine(tmp_path: Path) -> None:
    cfg = realnode._kubelet_config(tmp_path, _state(tmp_path), 10250, 10248)
    assert cfg["failCgroupV1"] is False and cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["address"] == realnode.gateway() and cfg["healthzBindAddress"] == "127.0.0.1"
    assert cfg["readOnlyPort"] == 0
    assert cfg["resolvConf"] == str(tmp_path / "resolv.conf") and cfg["clusterDNS"] == []
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["cgroupRoot"] == f"/{realnode.CGROUP_ROOT}"
    # everything the kubelet writes outside its root dir is pointed under the workdir
    for key in ("podLogsDir", "volumePluginDir", "tlsCertFile", "tlsPrivateKeyFile"):
        assert str(cfg[key]).startswith(str(tmp_path))
    assert cfg["containerRuntimeEndpoint"] == f"unix://{tmp_path}/containerd/containerd.sock"


def test_kube_proxy_leaves_conntrack_alone_and_listens_on_loopback(tmp_path: Path) -> None:
    cfg = realnode._kube_proxy_config(tmp_path, _state(tmp_path), 1, 2)
    assert cfg["mode"] == "nftables"
    assert cfg["conntrack"]["maxPerCore"] == 0 and cfg["conntrack"]["min"] == 0
    assert cfg["healthzBindAddress"].startswith("127.0.0.1:") and cfg["metricsBindAddress"].startswith("127.0.0.1:")
    assert cfg["clusterCIDR"] == realnode.NODE_SUBNET


def test_containerd_config_keeps_its_state_under_the_workdir(tmp_path: Path) -> None:
    text = realnode._containerd_config(tmp_path, "localhost/pause:x")
    assert "restrict_oom_score_adj = true" in text and "SystemdCgroup = false" in text
    for key in ("root", "state", "address", "path", "Root", "conf_dir"):
        lines = [line for line in text.splitlines() if line.strip().startswith(f"{key} =")]
        assert lines and all(str(tmp_path) in line or line.endswith('= ""') for line in lines), key
    assert 'stream_server_address = "127.0.0.1"' in text
    assert text.count('address = ""') == 2  # no debug or metrics listener


def test_cni_config_hands_out_addresses_from_the_bridge_subnet(tmp_path: Path) -> None:
    cfg = realnode._cni_config(tmp_path, "172.30.254.0/24")
    bridge = cfg["plugins"][0]
    assert bridge["bridge"] == realnode.BRIDGE and bridge["ipMasq"] is False
    rng = bridge["ipam"]["ranges"][0][0]
    assert rng["gateway"] == "172.30.254.1" and rng["rangeStart"] == "172.30.254.10"
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_nft_ruleset_counts_every_drop(tmp_path: Path) -> None:
    text = realnode._nft_ruleset(_state(tmp_path), SERVICE_CIDR)
    drops = [line for line in text.splitlines() if "drop" in line]
    assert len(drops) == 5 and all("counter drop" in line for line in drops)
    assert f"ip daddr {SERVICE_CIDR} counter drop" in text
    assert f"ip saddr {realnode.NODE_SUBNET}" in text
    # the node's address (kubelet, apiserver relay) answers nothing that comes in from outside
    guard = next(line for line in drops if "node-address-from-outside" in line)
    assert "ip daddr 172.30.254.1 " in guard and 'iifname != { "mrnode0", "lo" }' in guard


def test_parse_counters() -> None:
    doc = {"nftables": [
        {"metainfo": {}},
        {"table": {"family": "inet", "name": "t"}},
        {"rule": {"chain": "leak", "comment": "a", "expr": [{"match": {}}, {"counter": {"packets": 3, "bytes": 9}},
                                                            {"drop": None}]}},
        {"rule": {"chain": "leak", "comment": "b", "expr": [{"counter": {"packets": 0, "bytes": 0}}]}},
        {"rule": {"chain": "leak", "handle": 7, "expr": [{"accept": None}]}},
    ]}
    assert realnode.parse_counters(doc) == {"a": 3, "b": 0}


def test_kube_only_tells_the_kubelets_tables_from_others() -> None:
    kubelet_filter: list[dict[str, Any]] = [
        {"table": {"family": "ip", "name": "filter"}},
        {"chain": {"name": "KUBE-FIREWALL"}},
        {"chain": {"name": "OUTPUT"}},
        {"chain": {"name": "KUBE-KUBELET-CANARY"}},
        {"rule": {"chain": "KUBE-FIREWALL", "expr": [{"drop": None}]}},
        {"rule": {"chain": "OUTPUT", "expr": [{"counter": {}}, {"jump": {"target": "KUBE-FIREWALL"}}]}},
    ]
    assert realnode.kube_only(kubelet_filter)
    someone_elses: list[dict[str, Any]] = [*kubelet_filter, {"rule": {"chain": "OUTPUT", "expr": [{"accept": None}]}}]
    assert not realnode.kube_only(someone_elses)
    assert not realnode.kube_only([{"chain": {"name": "DOCKER"}}])


def test_mounts_under_lists_deepest_first() -> None:
    info = "\n".join(
        f"{i} 1 0:1 / {point} rw - tmpfs tmpfs rw"
        for i, point in enumerate(["/", "/w/a", "/w/a/b/c", "/w/a/b", "/wx", "/w/with\\040space"])
    )
    assert realnode.mounts_under("/w", mountinfo=info) == ["/w/a/b/c", "/w/a/b", "/w/a", "/w/with space"]


def test_state_round_trips(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.sysctls = {"kernel.panic": "1"}
    state.pids = {"kubelet": 42}
    state.created = ["bridge"]
    state.save()
    assert realnode.NodeState.load(tmp_path) == state
