"""Name and tag grammars from the distribution spec.

A name that passes :func:`validate_name` contains only ``[a-z0-9._/-]`` in
spec-shaped components, so it can never name ``..`` or an absolute path.
"""

from __future__ import annotations

import re

from .errors import NameInvalid, TagInvalid

_NAME = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name!r}")
    return name


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG.fullmatch(tag))


def validate_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise TagInvalid(f"invalid tag {tag!r}")
    return tag


def referrers_tag(digest) -> str:
    """The OCI 1.0 referrers fallback tag for a subject digest: ``<alg>-<hex>``."""
    alg = re.sub(r"[^a-zA-Z0-9._-]", "-", digest.algorithm[:32])
    enc = re.sub(r"[^a-zA-Z0-9._-]", "-", digest.hex[:64])
    return f"{alg}-{enc}"
