"""Content digests: parsing, validation and hashing (sha256 and sha512).

``Digest.parse`` accepts only the canonical ``<alg>:<lowercase hex>`` form with
the algorithm's exact length, so a digest can never smuggle path characters
into a storage key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import DigestInvalid

ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[a-f0-9]+$")
# The digest grammar of the image spec (used to tell "malformed" from "unsupported").
_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, value: str) -> "Digest":
        if not isinstance(value, str) or ":" not in value:
            raise DigestInvalid(f"invalid digest {value!r}")
        alg, _, hexpart = value.partition(":")
        length = ALGORITHMS.get(alg)
        if length is None:
            if _GRAMMAR.fullmatch(value):
                raise DigestInvalid(f"unsupported digest algorithm {alg!r}")
            raise DigestInvalid(f"invalid digest {value!r}")
        if len(hexpart) != length or not _HEX.fullmatch(hexpart):
            raise DigestInvalid(f"invalid digest {value!r}")
        return cls(alg, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> "Digest":
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self):
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def is_digest(reference: str) -> bool:
    return ":" in reference


def check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
    return algorithm
