"""Which etcd the local control plane runs, and what the apiserver gets with it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devenv.localenv import controlplane as cpmod
from devenv.localenv.controlplane import ControlPlaneError, Etcd, etcd_build_dir, select_etcd


@pytest.mark.parametrize(("version", "cache"), [
    ("3.4.23", False), ("3.4.30", False), ("3.4.31", True), ("3.5.0", False), ("3.5.12", False),
    ("3.5.13", True), ("3.6.0", True), ("3.6.17", True), ("3.7.2", True),
])
def test_watch_cache_only_where_etcd_serves_progress_requests(version: str, cache: bool) -> None:
    assert Etcd("etcd", version, "path").watch_cache is cache


def test_progress_notify_flag_is_named_as_each_release_names_it() -> None:
    assert Etcd("etcd", "3.6.17", "built").flags() == ["--watch-progress-notify-interval=5s"]
    assert Etcd("etcd", "3.5.21", "path").flags() == ["--experimental-watch-progress-notify-interval=5s"]
    assert Etcd("etcd", "3.4.23", "debian").flags() == []


def _fake_etcd(path: Path, version: str) -> Path:
    path.write_text(f"#!/bin/sh\necho 'etcd Version: {version}'\necho 'Git SHA: Not provided'\n")
    path.chmod(0o755)
    return path


def test_auto_prefers_the_built_etcd_and_falls_back_to_debian(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELROLLOUT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpmod, "DEBIAN_ETCD", str(_fake_etcd(tmp_path / "debian-etcd", "3.4.23")))
    monkeypatch.delenv("MODELROLLOUT_ETCD", raising=False)
    assert select_etcd() == Etcd(str(tmp_path / "debian-etcd"), "3.4.23", "debian")
    with pytest.raises(ControlPlaneError, match=r"hack/etcd/build\.sh"):
        select_etcd("built")

    built = etcd_build_dir() / "etcd"
    built.parent.mkdir(parents=True)
    _fake_etcd(built, "3.6.17")
    assert select_etcd() == Etcd(str(built), "3.6.17", "built")
    monkeypatch.setenv("MODELROLLOUT_ETCD", "debian")
    assert select_etcd().source == "debian" and not select_etcd().watch_cache
    monkeypatch.setenv("MODELROLLOUT_ETCD", str(built))
    assert select_etcd() == Etcd(str(built), "3.6.17", "path")
    monkeypatch.setenv("MODELROLLOUT_ETCD", "3.6")
    with pytest.raises(ControlPlaneError, match="expected auto, built, debian or a path"):
        select_etcd()


def test_the_build_dir_is_the_one_build_sh_fills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """etcd_build_dir() computes hack/etcd/build.sh's cache dir itself: with the binary in place, build.sh
    (which then builds nothing) prints the same path."""
    monkeypatch.setenv("MODELROLLOUT_CACHE", str(tmp_path / "cache"))
    expected = etcd_build_dir() / "etcd"
    expected.parent.mkdir(parents=True)
    _fake_etcd(expected, "3.6.17")
    script = cpmod.repo_root() / "hack" / "etcd" / "build.sh"
    out = subprocess.run(["bash", str(script)], env=dict(os.environ), capture_output=True, text=True, check=True,
                         timeout=60)
    assert out.stdout.strip().splitlines()[-1] == str(expected)
    assert expected.parent.name.startswith("etcd-v3.6.")
