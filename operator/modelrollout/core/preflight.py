"""Preflight of a new revision against the stable one: config migrations and dependency jumps. Pure.

Before any traffic moves, the new revision's ``spec.model`` is compared with what the stable revision
ran: a dependency whose major version changes (torch 2 -> 3) or a config key the stable revision had that
the new one neither keeps nor renames through ``configMigrations`` makes the first traffic step wait for
a person (see :func:`modelrollout.core.plan.gate_reason`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    """The config with every renamed key under its new name (the new name wins if both are present)."""
    out = dict(config)
    for rule in migrations:
        if rule.from_ in out:
            value = out.pop(rule.from_)
            out.setdefault(rule.to, value)
    return out


def removed_keys(
    old: Mapping[str, Any], new: Mapping[str, Any], migrations: Sequence[api.ConfigMigration] = ()
) -> list[str]:
    """Keys of the stable config that the new config drops without a migration rule."""
    renamed = {m.from_ for m in migrations if m.to in new}
    return sorted(k for k in old if k not in new and k not in renamed)


@dataclass(frozen=True)
class Preflight:
    dependency_changes: list[str]
    dependency_jumps: list[str]
    removed_config_keys: list[str]
    renamed_config_keys: list[str]

    @property
    def reasons(self) -> list[str]:
        """Why the first traffic step needs a person (empty: no gate)."""
        out = list(self.dependency_jumps)
        out += [f"config key {k} removed without a migration rule" for k in self.removed_config_keys]
        return out


def preflight(stable: api.ModelSnapshot | None, model: api.ModelInfo) -> Preflight:
    """Compare the new revision's model with the stable one's (no stable yet: nothing to compare)."""
    if stable is None:
        return Preflight([], [], [], [])
    changes, jumps = dependency_changes(stable.dependencies, model.dependencies)
    migrated_old = migrate(stable.config, model.config_migrations)
    renamed = [f"{m.from_} -> {m.to}" for m in model.config_migrations if m.from_ in stable.config]
    return Preflight(changes, jumps, removed_keys(migrated_old, model.config), renamed)


def snapshot(model: api.ModelInfo) -> api.ModelSnapshot:
    """What status keeps of the stable revision's model for the next preflight."""
    return api.ModelSnapshot(version=model.version, config=dict(model.config), dependencies=dict(model.dependencies))
