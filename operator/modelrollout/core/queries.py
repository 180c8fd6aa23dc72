"""Query templates, rendered strictly: ``{{rollout}}`` etc.; an unknown or missing variable is an error. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping

from modelrollout.api import QUERY_VARIABLES

_VAR = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")


class TemplateError(ValueError):
    """A query uses a variable that is not defined."""


def variables_in(query: str) -> list[str]:
    return _VAR.findall(query)


def check_template(query: str) -> str | None:
    """Why the query cannot be rendered (unknown variables), or None."""
    unknown = sorted({v for v in variables_in(query) if v not in QUERY_VARIABLES})
    if unknown:
        return (f"unknown template variable(s) {', '.join('{{' + u + '}}' for u in unknown)}; allowed: "
                + ", ".join("{{" + v + "}}" for v in QUERY_VARIABLES))
    return None


def render(query: str, values: Mapping[str, str]) -> str:
    """Substitute every ``{{name}}``; raise TemplateError if one has no value."""
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise TemplateError(f"query variable {{{{{name}}}}} has no value")
        return values[name]

    return _VAR.sub(sub, query)
