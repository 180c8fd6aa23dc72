"""Preflight of a new revision against the stable one: config migrations and dependency jumps. Pure.

Before any traffic moves, the new revision's ``spec.model`` is compared with what the stable revision
ran: a dependency whose major version changes (torch 2 -> 3) or a config key the stable revision's rendered
config had that the new revision's rendered config (after ``configMigrations``) lacks makes the first traffic
step wait for a person (see :func:`modelrollout.core.plan.gate_reason`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelrollout import api

_MAJOR = re.compile(r"^\s*v?(\d+)")


def major(version: str) -> int | None:
    """The major version of ``2.5.1`` (2), ``v3`` (3); None when there is none."""
    match = _MAJOR.match(version)
    return int(match.group(1)) if match else None


def dependency_changes(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(all changes, major-version jumps) between two dependency maps, as sentences."""
    changes, jumps = [], []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            changes.append(f"{name} added at {after}")
            continue
        if after is None:
            changes.append(f"{name} {before} removed")
            continue
        changes.append(f"{name} {before} -> {after}")
        a, b = major(before), major(after)
        if a is not None and b is not None and a != b:
            jumps.append(f"{name} {before} -> {after} is a major-version change")
    return changes, jumps


def migrate(config: Mapping[str, Any], migrations: Sequence[api.ConfigMigration]) -> dict[str, Any]:
    """The config as the model server gets it: every renamed key under its final name.

    Rules chain (``a -> b`` and ``b -> c`` put ``a``'s value under ``c``, whatever the order of the rules);
    when several names of one chain are present, the name nearest the end of the chain wins (the new name
    beats the old one). A rule cycle stops at the last name before it repeats. Rules rename top-level keys;
    a nested mapping moves with its key.
    """
    rename = {m.from_: m.to for m in migrations}
    placed: dict[str, tuple[int, Any]] = {}
    for key, value in config.items():
        final, hops, seen = key, 0, {key}
        while final in rename and rename[final] not in seen:
            final = rename[final]
            seen.add(final)
            hops += 1
        if final not in placed or hops < placed[final][0]:
            placed[final] = (hops, value)
    return {key: value for key, (_, value) in placed.items()}


def final_name(key: str, migrations: Sequence[api.ConfigMigration]) -> str:
    """Where ``key`` ends up after the rules (itself when no rule renames it)."""
    return next(iter(migrate({key: None}, migrations)))


def key_paths(config: Mapping[str, Any], prefix: str = "") -> set[str]:
    """The leaf keys of a config, nested mappings as dotted paths (``generation.top_k``); an empty mapping is a
    leaf of its own."""
    out: set[str] = set()
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= key_paths(value, f"{path}.")
        else:
            out.add(path)
    return out


def removed_keys(
    old: Mapping[str, Any], new: Mapping[str, Any], migrations: Sequence[api.ConfigMigration] = ()
) -> list[str]:
    """Keys (dotted leaf paths) of the stable config that the new revision's rendered config no longer has; both
    sides are rendered with ``migrations`` first."""
    return sorted(key_paths(migrate(old, migrations)) - key_paths(migrate(new, migrations)))


@dataclass(frozen=True)
class Preflight:
    dependency_changes: list[str]
    dependency_jumps: list[str]
    removed_config_keys: list[str]
    renamed_config_keys: list[str]
    added_config_keys: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Why the first traffic step needs a person (empty: no gate)."""
        out = list(self.dependency_jumps)
        out += [f"config key {k} removed without a migration rule" for k in self.removed_config_keys]
        return out


def preflight(stable: api.ModelSnapshot | None, model: api.ModelInfo) -> Preflight:
    """Compare the new revision's rendered config and dependencies with the stable one's (no stable yet: nothing
    to compare).

    Both configs are compared as the model servers get them: the stable config (kept rendered by
    :func:`snapshot`; one kept raw by an older operator is rendered here) and the new config, each after the new
    revision's ``configMigrations``, so a new config that still uses old names with rules for them removes
    nothing.
    """
    if stable is None:
        return Preflight([], [], [], [])
    changes, jumps = dependency_changes(stable.dependencies, model.dependencies)
    rules = model.config_migrations
    old, new = key_paths(migrate(stable.config, rules)), key_paths(migrate(model.config, rules))
    renamed = sorted(f"{key} -> {final_name(key, rules)}" for key in stable.config
                     if final_name(key, rules) != key and final_name(key, rules) in migrate(model.config, rules))
    return Preflight(changes, jumps, sorted(old - new), renamed, sorted(new - old))


def snapshot(model: api.ModelInfo) -> api.ModelSnapshot:
    """What status keeps of the stable revision's model for the next preflight: the config as rendered."""
    return api.ModelSnapshot(version=model.version, config=migrate(model.config, model.config_migrations),
                             dependencies=dict(model.dependencies))
