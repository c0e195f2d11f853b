"""The UI's read model (:mod:`angos.registry.image_views`) in process, on a real filesystem store:
a config blob is never read past the limit whatever its descriptor claims; a page of tags reads
only those tags' records; the untagged listing leaves out index children and referrers of stored
subjects and pages to the end; details name parents with their platforms."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from angos.config import load_config_text
from angos.oci.digest import Digest
from angos.registry import build_registry
from angos.registry.image_views import CONFIG_LIMIT, ROW_REFERRERS, ImageViews, platform_name
from angos.registry.manifests import WritePolicy
from angos.registry.timestamps import now

OCI = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
NS = "team/app"


@pytest.fixture
def reg(tmp_path):
    cfg = load_config_text(f'[server]\nbind_address = "127.0.0.1"\nworkers = 1\n'
                           f'[blob_store.fs]\nroot_dir = "{tmp_path / "data"}"\n')
    return build_registry(cfg)


def blob(reg, data: bytes, media_type: str = LAYER, size: int | None = None) -> dict:
    d = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    reg.uploads.monolithic(NS, d, [data], len(data), None)
    return {"mediaType": media_type, "digest": str(d), "size": len(data) if size is None else size}


def put(reg, ref: str, doc: dict) -> tuple[str, bytes]:
    body = json.dumps(doc).encode()
    return str(reg.manifests.put(NS, ref, body, doc["mediaType"], WritePolicy()).digest), body


def image(reg, seed: str, arch: str = "amd64", ref: str | None = None, config: dict | None = None,
          **extra) -> tuple[str, bytes]:
    cfg = config or blob(reg, json.dumps({"os": "linux", "architecture": arch, "seed": seed}).encode(), CONFIG)
    doc = {"schemaVersion": 2, "mediaType": OCI, "config": cfg, "layers": [blob(reg, seed.encode() * 10)], **extra}
    body = json.dumps(doc).encode()
    return put(reg, ref or "sha256:" + hashlib.sha256(body).hexdigest(), doc)


def test_platform_names():
    assert platform_name({"os": "linux", "architecture": "arm64", "variant": "v8"}) == "linux/arm64/v8"
    assert platform_name({"os": "windows", "architecture": "amd64"}) == "windows/amd64"
    assert platform_name({"os": "linux"}) is None and platform_name("linux/amd64") is None


def test_a_config_blob_is_never_read_past_the_limit(reg):
    head = json.dumps({"os": "linux", "architecture": "riscv64"}).encode()
    big = head + b" " * (CONFIG_LIMIT + 100 - len(head))   # valid JSON, just too large
    small, _ = image(reg, "small", "riscv64")
    honest, _ = image(reg, "honest", config=blob(reg, big, CONFIG))
    liar, _ = image(reg, "liar", config=blob(reg, big, CONFIG, size=len(head)))   # claims to be tiny
    views = ImageViews(reg)
    assert views.summary(NS, small)["platforms"] == ["linux/riscv64"]
    for d in (honest, liar):
        assert views.summary(NS, d)["platforms"] == []
    assert views.details(NS, honest)["config"]["too_large"] is True
    liar_cfg = views.details(NS, liar)["config"]
    assert liar_cfg["parsed"] is False and liar_cfg["too_large"] is False


class CountingStore:
    """The real metadata store, counting the objects read under each key prefix."""

    def __init__(self, inner):
        self.inner, self.reads = inner, []

    def get(self, key):
        self.reads.append(key)
        return self.inner.get(key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_page_of_tags_reads_only_those_tags(reg):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    digests = [image(reg, f"img{i}")[0] for i in range(3)]
    names = sorted({f"t{rng.randrange(10**6):06d}" for _ in range(400)})
    for name in names:
        reg.manifests.tags.put(NS, name, rng.choice(digests), now())
    counting = CountingStore(reg.meta_store)
    reg.meta_store = reg.manifests.meta = reg.manifests.tags.meta = counting
    views = ImageViews(reg)
    views.meta = counting
    start = rng.randrange(len(names) - 20)
    page = names[start:start + 20]
    rows = views.tag_rows(NS, page)
    assert [r["tag"] for r in rows] == page
    tag_reads = [k.rsplit("/", 1)[1] for k in counting.reads if "/_manifests/tags/" in k]
    # Besides the page's tags, only each digest's referrers fallback tag (``sha256-<hex>``) is looked up.
    assert sorted(t for t in tag_reads if not t.startswith("sha256-")) == page
    assert len([t for t in tag_reads if t.startswith("sha256-")]) <= len(digests)
    revision_reads = [k for k in counting.reads if "/_manifests/revisions/" in k]
    assert len(revision_reads) == len(set(revision_reads)) <= len(digests)   # each digest read once at most


def test_untagged_leaves_out_children_and_referrers_of_stored_subjects(reg):
    tagged, tagged_body = image(reg, "tagged", ref="v1")
    loose, _ = image(reg, "loose")
    child, child_body = image(reg, "child", "arm64")
    index, _ = put(reg, "idx", {
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": OCI, "digest": child, "size": len(child_body),
                       "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]})
    reg.manifests.delete(NS, "idx")   # the index is untagged now; its child still is not a row
    sig, _ = image(reg, "sig", artifactType="application/vnd.example.sig",
                   subject={"mediaType": OCI, "digest": tagged, "size": len(tagged_body)})
    stray, _ = image(reg, "stray", artifactType="application/vnd.example.sig",
                     subject={"mediaType": OCI, "digest": "sha256:" + "1" * 64, "size": 10})
    views = ImageViews(reg)
    expected = sorted([loose, index, stray])
    rows, more = views.untagged(NS, views.tagged_digests(NS), None, 10)
    assert [r["digest"] for r in rows] == expected and more is None
    walked, after = [], None
    for _ in range(10):
        page, after = views.untagged(NS, {tagged}, after, 1)
        walked += [r["digest"] for r in page]
        if after is None:
            break
    assert walked == expected
    assert views.summary(NS, tagged)["referrers"][0]["digest"] == sig
    assert views.summary(NS, tagged)["referrers"][0]["artifact_type"] == "application/vnd.example.sig"
    idx = views.summary(NS, index)
    assert idx["kind"] == "index" and idx["platforms"] == ["linux/arm64/v8"]
    assert views.details(NS, child)["parents"] == [{"digest": index, "platform": "linux/arm64/v8"}]
    assert views.details(NS, tagged)["tags"] == ["v1"]
    assert views.details(NS, "sha256:" + "2" * 64) is None


def test_a_row_reads_a_few_referrers_and_counts_the_rest(reg):
    subject, body = image(reg, "subject", ref="v1")
    desc = {"mediaType": OCI, "digest": subject, "size": len(body)}
    refs = sorted(image(reg, f"att{i}", artifactType="application/vnd.example.att", subject=desc)[0]
                  for i in range(ROW_REFERRERS + 5))
    views = ImageViews(reg)
    row = views.summary(NS, subject)
    assert row["referrer_count"] == len(refs) and len(row["referrers"]) == ROW_REFERRERS
    assert {r["digest"] for r in row["referrers"]} < set(refs)
    full = views.details(NS, subject)
    assert full["referrer_count"] == len(refs) and [r["digest"] for r in full["referrers"]] == refs
