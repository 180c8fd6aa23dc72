"""Container image references as a kubelet (containerd, CRI-O) parses them. Pure: no I/O (like
:mod:`modelrollout.durations`, it serves both the API models and the core).

The grammar is the one of ``github.com/distribution/reference``::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain "/"] path                      (at most 255 characters)
    domain           := host [ ":" port-number ]
    host             := domain-name | "[" IPv6address "]"
    domain-name      := domain-component [ "." domain-component ]*
    domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
    port-number      := /[0-9]+/
    path             := path-component [ "/" path-component ]*
    path-component   := alpha-numeric [ separator alpha-numeric ]*
    alpha-numeric    := /[a-z0-9]+/
    separator        := /[_.]|__|[-]+/
    tag              := /[\\w][\\w.-]{0,127}/
    digest           := algorithm ":" encoded

and a digest is checked as ``github.com/opencontainers/go-digest`` does before anything is pulled: only the
registered algorithms, each with its exact number of lower-case hex digits. :data:`PATTERN` (the whole
grammar with those digests, but not the 255-character limit on the name) goes into the CRD as the OpenAPI
``pattern`` of every image field, so the apiserver refuses such a spec at admission; :func:`problem` says in
words what is wrong (the operator's own check, for what the pattern cannot express and for objects the schema
did not check).
"""

from __future__ import annotations

import re

NAME_MAX = 255
"""The longest name (domain and path) distribution/reference accepts."""
DIGESTS = {"sha256": 64, "sha384": 96, "sha512": 128}
"""The digest algorithms go-digest has registered, with the number of hex digits of each."""

_WORD = "[A-Za-z0-9_]"  # \w of RE2 (ASCII), spelled out: Python's and Rust's \w also match non-ASCII letters
_ALNUM = "[a-z0-9]+"
_SEPARATOR = "(?:[._]|__|[-]+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
PATH = f"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
DOMAIN = f"{_HOST}(?::[0-9]+)?"
NAME = f"(?:{DOMAIN}/)?{PATH}"
TAG = f"{_WORD}[A-Za-z0-9_.-]{{0,127}}"
DIGEST = "(?:" + "|".join(f"{algorithm}:[a-f0-9]{{{size}}}" for algorithm, size in DIGESTS.items()) + ")"
PATTERN = f"^{NAME}(?::{TAG})?(?:@{DIGEST})?$"
"""An image reference a kubelet accepts (apart from the length of the name)."""

_REFERENCE = re.compile(PATTERN)
_SPLIT = re.compile(r"^(?P<name>[^@]*?)(?::(?P<tag>[^:/@]*))?(?:@(?P<digest>.*))?$")
_DIGEST_SYNTAX = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")


def _show(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def problem(reference: str) -> str | None:
    """What makes ``reference`` an image a kubelet refuses, in words; None when it is a valid reference."""
    if _REFERENCE.fullmatch(reference):
        name = reference.split("@", 1)[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        if len(name) > NAME_MAX:
            return f"the repository name is {len(name)} characters long, more than {NAME_MAX}"
        return None
    if reference != reference.strip() or any(c.isspace() for c in reference):
        return "it contains whitespace"
    parts = _SPLIT.match(reference)
    if parts is None or not parts.group("name"):
        return "it has no repository name"
    name, tag, digest = parts.group("name"), parts.group("tag"), parts.group("digest")
    if not re.fullmatch(NAME, name):
        if re.fullmatch(NAME, name.lower()):
            return f"the repository name {_show(name)} has upper-case letters (only the registry host may)"
        return (f"the repository name {_show(name)} breaks the grammar: [HOST[:PORT]/]PATH, path components of "
                "lower-case letters and digits joined by '.', '_', '__' or '-', separated by '/'")
    if tag is not None and not re.fullmatch(TAG, tag):
        return ("the tag is empty" if tag == "" else
                f"the tag {_show(tag)} is not 1-128 characters of letters, digits, '_', '.' and '-' starting with a "
                "letter, digit or '_'")
    if digest is not None:
        if not _DIGEST_SYNTAX.match(digest):
            return f"the digest {_show(digest)} is not ALGORITHM:HEX (at least 32 hex digits)"
        algorithm, encoded = digest.split(":", 1)
        if algorithm not in DIGESTS:
            return f"the digest algorithm {_show(algorithm)} is not supported (use one of {', '.join(DIGESTS)})"
        return f"the {algorithm} digest must be {DIGESTS[algorithm]} lower-case hex digits, not {_show(encoded)}"
    return "it is not an image reference: [HOST[:PORT]/]PATH[:TAG][@ALGORITHM:HEX]"
