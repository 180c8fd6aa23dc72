"""Which images the pre-pull DaemonSet holds, and what the last successful revisions ran. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelrollout import api


def template_images(template: Mapping[str, Any]) -> tuple[str, ...]:
    """Images of a pod template's init and regular containers, in order, without repeats."""
    spec = template.get("spec") or {}
    out: list[str] = []
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            image = container.get("image")
            if image and image not in out:
                out.append(image)
    return tuple(out)


def remember(history: Sequence[api.RevisionImages], revision: str, images: Iterable[str],
             keep: int) -> list[api.RevisionImages]:
    """The last ``max(keep, 1)`` successful revisions' images, newest last, with ``revision`` added."""
    rest = [h for h in history if h.revision != revision]
    return [*rest, api.RevisionImages(revision=revision, images=list(images))][-max(keep, 1):]


def wanted(*groups: Iterable[str]) -> tuple[str, ...]:
    """The union of image groups, sorted (the DaemonSet's pull containers follow this order)."""
    return tuple(sorted({image for group in groups for image in group}))


def kept(history: Sequence[api.RevisionImages], keep: int) -> list[str]:
    """Images of the last ``keep`` successful revisions."""
    if keep <= 0:
        return []
    return [image for h in history[-keep:] for image in h.images]
