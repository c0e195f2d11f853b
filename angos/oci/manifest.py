"""Manifest parsing: validate a pushed body and extract what the registry needs.

``parse_manifest(body, content_type)`` checks that the body is a JSON object,
that its ``mediaType`` agrees with the request's Content-Type, and that every
descriptor is well formed. It returns a :class:`ParsedManifest` listing the
blobs it references, child manifests (for indexes) and the ``subject``.
The original bytes are never re-serialised: the registry stores them verbatim.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from . import media_types as mt
from .digest import Digest
from .errors import DigestInvalid, ManifestInvalid

_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: dict | None = None
    platform: dict | None = None
    urls: tuple = ()

    def to_json(self) -> dict:
        out = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        return out


@dataclass(frozen=True)
class ParsedManifest:
    media_type: str
    blobs: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict = field(default_factory=dict)
    config_media_type: str | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEX_TYPES

    def referrer_artifact_type(self) -> str | None:
        """The artifactType a referrers listing reports for this manifest."""
        if self.artifact_type:
            return self.artifact_type
        if not self.is_index:
            return self.config_media_type
        return None


def is_media_type(value) -> bool:
    """An RFC 6838 ``type/subtype`` (no parameters, no whitespace): safe to serve as Content-Type."""
    return isinstance(value, str) and _MEDIA_TYPE.fullmatch(value) is not None


def servable_media_type(body: bytes) -> str:
    """The media type to serve a stored body with when its recorded one is unusable: what the body
    declares when that is valid, else what its structure says (an index or an image manifest)."""
    try:
        return parse_manifest(body, None).media_type
    except Exception:  # noqa: BLE001 - a body that no longer parses still gets a usable type
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = {}
        return _guess(doc if isinstance(doc, dict) else {})


def clean_media_type(value: str | None) -> str | None:
    """Strip parameters (``; charset=...``) from a Content-Type value."""
    if not value:
        return None
    base = value.split(";", 1)[0].strip()
    return base or None


def _descriptor(obj, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ManifestInvalid(f"{where}: descriptor must be an object")
    media_type = obj.get("mediaType")
    if not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type):
        raise ManifestInvalid(f"{where}: invalid or missing mediaType")
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}: invalid or missing size")
    try:
        digest = Digest.parse(obj.get("digest"))
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where}: {exc.message}") from None
    artifact_type = obj.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{where}: artifactType must be a string")
    annotations = obj.get("annotations")
    if annotations is not None and not _is_string_map(annotations):
        raise ManifestInvalid(f"{where}: annotations must map strings to strings")
    urls = obj.get("urls") or ()
    if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
        raise ManifestInvalid(f"{where}: urls must be a list of strings")
    platform = obj.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise ManifestInvalid(f"{where}: platform must be an object")
    return Descriptor(media_type, digest, size, artifact_type, annotations, platform, tuple(urls))


def _is_string_map(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ManifestInvalid("manifest is not valid JSON") from None
    except RecursionError:  # a few KB of "[[[[…" is enough to exhaust the parser's stack
        raise ManifestInvalid("manifest JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest must be a JSON object")

    declared = doc.get("mediaType")
    if declared is not None and (not isinstance(declared, str) or not _MEDIA_TYPE.fullmatch(declared)):
        raise ManifestInvalid("mediaType must be a media type string")
    header = clean_media_type(content_type)
    if declared and header and declared != header:
        raise ManifestInvalid(f"Content-Type {header!r} does not match the manifest mediaType {declared!r}")
    media_type = declared or header
    if media_type is None or media_type in ("application/json", "application/octet-stream"):
        media_type = _guess(doc)
    if header is not None and not _MEDIA_TYPE.fullmatch(header):
        raise ManifestInvalid(f"invalid Content-Type {header!r}")
    if media_type in (mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED):
        raise ManifestInvalid("Docker schema1 manifests are not supported")

    looks_like_index = "manifests" in doc
    looks_like_image = "config" in doc or "layers" in doc
    if media_type in mt.MANIFEST_TYPES or looks_like_index or looks_like_image:
        if doc.get("schemaVersion") != 2:
            raise ManifestInvalid("schemaVersion must be 2")

    artifact_type = doc.get("artifactType")
    if artifact_type is not None and (not isinstance(artifact_type, str) or not _MEDIA_TYPE.fullmatch(artifact_type)):
        raise ManifestInvalid("artifactType must be a media type string")
    annotations = doc.get("annotations") or {}
    if not _is_string_map(annotations):
        raise ManifestInvalid("annotations must map strings to strings")

    blobs: list[Descriptor] = []
    children: list[Descriptor] = []
    config_media_type = None
    if media_type in mt.INDEX_TYPES or (looks_like_index and media_type not in mt.IMAGE_TYPES):
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise ManifestInvalid("index must have a manifests list")
        children = [_descriptor(d, f"manifests[{i}]") for i, d in enumerate(manifests)]
    elif media_type in mt.IMAGE_TYPES or looks_like_image:
        config = doc.get("config")
        if config is None:
            raise ManifestInvalid("image manifest must have a config descriptor")
        cfg = _descriptor(config, "config")
        config_media_type = cfg.media_type
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise ManifestInvalid("layers must be a list")
        blobs = [cfg] + [_descriptor(d, f"layers[{i}]") for i, d in enumerate(layers)]
    subject = None
    if doc.get("subject") is not None:
        subject = _descriptor(doc["subject"], "subject")
    return ParsedManifest(media_type, tuple(blobs), tuple(children), subject, artifact_type,
                          annotations, config_media_type)


def _guess(doc: dict) -> str:
    if "manifests" in doc:
        return mt.OCI_INDEX
    return mt.OCI_MANIFEST
