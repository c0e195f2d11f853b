"""The referrers API over real HTTP: ``subject`` → ``OCI-Subject``, descriptor
contents (artifactType, from the config media type when absent; annotations),
``artifactType`` filtering with ``OCI-Filters-Applied``, empty answers for
unknown subjects and namespaces, and folding of an OCI 1.0 fallback tag — for
sha256 and sha512 subjects."""

from __future__ import annotations

import shutil

import pytest
import requests

from .helpers import (ALGS, OCI_INDEX, OCI_MANIFEST, assert_oci_error, descriptor, digest_of, index_manifest,
                      push_image, put_manifest, uniq)

SBOM = "application/vnd.example.sbom.v1+json"
SIG = "application/vnd.example.signature.v1+json"


def _subject(server, ns: str, alg: str) -> tuple[str, dict]:
    d, body, mt, _ = push_image(server, ns, alg)  # by its `alg` digest
    return d, descriptor(mt, body, alg)


def _referrers(server, ns: str, d: str, **params) -> requests.Response:
    r = requests.get(server.v2(f"{ns}/referrers/{d}"), params=params)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == OCI_INDEX
    doc = r.json()
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
    return r


@pytest.mark.parametrize("alg", ALGS)
def test_manifest_with_subject_is_listed_with_artifact_type_and_annotations(angos, alg):
    ns = uniq("ref")
    subject_digest, subject = _subject(angos, ns, alg)
    r_digest, body, mt, _ = push_image(angos, ns, alg, subject=subject, artifact_type=SBOM,
                                       annotations={"org.example.kind": "sbom"})
    # push_image asserted 201; the response must also carry OCI-Subject.
    r = put_manifest(angos, ns, r_digest, body, mt)
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == subject_digest
    entries = _referrers(angos, ns, subject_digest).json()["manifests"]
    assert entries == [{"mediaType": OCI_MANIFEST, "digest": r_digest, "size": len(body), "artifactType": SBOM,
                        "annotations": {"org.example.kind": "sbom"}}]


@pytest.mark.parametrize("alg", ALGS)
def test_artifact_type_defaults_to_the_config_media_type(angos, alg):
    ns = uniq("ref")
    subject_digest, subject = _subject(angos, ns, alg)
    d, _, _, _ = push_image(angos, ns, alg, subject=subject, config_media_type=SIG)
    entries = _referrers(angos, ns, subject_digest).json()["manifests"]
    assert [(e["digest"], e["artifactType"]) for e in entries] == [(d, SIG)]


@pytest.mark.parametrize("alg", ALGS)
def test_an_index_with_a_subject_is_a_referrer_too(angos, alg):
    ns = uniq("ref")
    subject_digest, subject = _subject(angos, ns, alg)
    _, child, child_mt, _ = push_image(angos, ns, alg)
    body = index_manifest([descriptor(child_mt, child, alg)], subject=subject, artifact_type=SBOM)
    d = digest_of(body, alg)
    r = put_manifest(angos, ns, d, body, OCI_INDEX)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subject_digest
    entries = _referrers(angos, ns, subject_digest).json()["manifests"]
    assert entries == [{"mediaType": OCI_INDEX, "digest": d, "size": len(body), "artifactType": SBOM}]


@pytest.mark.parametrize("alg", ALGS)
def test_artifact_type_filter_applies_and_says_so(angos, alg):
    ns = uniq("ref")
    subject_digest, subject = _subject(angos, ns, alg)
    sbom, _, _, _ = push_image(angos, ns, alg, subject=subject, artifact_type=SBOM)
    sig, _, _, _ = push_image(angos, ns, alg, subject=subject, artifact_type=SIG)
    everything = _referrers(angos, ns, subject_digest)
    assert "OCI-Filters-Applied" not in everything.headers
    assert sorted(e["digest"] for e in everything.json()["manifests"]) == sorted([sbom, sig])
    filtered = _referrers(angos, ns, subject_digest, artifactType=SIG)
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [e["digest"] for e in filtered.json()["manifests"]] == [sig]
    none = _referrers(angos, ns, subject_digest, artifactType="application/vnd.example.none")
    assert none.headers["OCI-Filters-Applied"] == "artifactType"
    assert none.json()["manifests"] == []


@pytest.mark.parametrize("alg", ALGS)
def test_referrers_of_unknown_subject_or_namespace_is_an_empty_index(angos, alg):
    ns = uniq("ref")
    push_image(angos, ns, alg, tag="x")
    missing = digest_of(b"no such subject", alg)
    assert _referrers(angos, ns, missing).json()["manifests"] == []
    assert _referrers(angos, uniq("nonexistent"), missing).json()["manifests"] == []


@pytest.mark.parametrize("alg", ALGS)
def test_referrer_pushed_before_its_subject_is_listed_and_deleting_it_unlists_it(angos, alg):
    ns = uniq("ref")
    absent = {"mediaType": OCI_MANIFEST, "digest": digest_of(b"subject pushed later", alg), "size": 20}
    d, _, _, _ = push_image(angos, ns, alg, subject=absent, artifact_type=SBOM)
    assert [e["digest"] for e in _referrers(angos, ns, absent["digest"]).json()["manifests"]] == [d]
    assert requests.delete(angos.v2(f"{ns}/manifests/{d}")).status_code == 202
    assert _referrers(angos, ns, absent["digest"]).json()["manifests"] == []


def test_referrers_are_per_namespace(angos):
    ns, other = uniq("ref"), uniq("ref")
    subject_digest, subject = _subject(angos, ns, "sha256")
    push_image(angos, ns, subject=subject, artifact_type=SBOM)
    assert _referrers(angos, other, subject_digest).json()["manifests"] == []


def _fallback_tag(subject_digest: str) -> str:
    """The OCI 1.0 referrers tag schema: ``<alg>-<hex>``, alg cut to 32 and hex to 64 characters."""
    alg, hexpart = subject_digest.split(":")
    return f"{alg[:32]}-{hexpart[:64]}"


def _forget_referrer_index(server, ns: str) -> None:
    """Simulate content pushed before the registry indexed referrers: drop the namespace's index."""
    root = server.workdir / "data"
    found = [p for p in root.rglob("_referrers") if p.is_dir() and ns in p.parts]
    assert found, "no referrer index found to drop (storage layout changed?)"
    for p in found:
        shutil.rmtree(p)


@pytest.mark.parametrize("alg", ALGS)
def test_existing_referrers_fallback_tag_is_folded_into_the_api(angos, alg):
    ns = uniq("ref")
    subject_digest, subject = _subject(angos, ns, alg)
    listed, listed_body, mt, _ = push_image(angos, ns, alg, subject=subject, artifact_type=SBOM)
    unrelated, unrelated_body, _, _ = push_image(angos, ns, alg)  # no subject: must not be folded in
    other_subject, _, _, _ = push_image(angos, ns, alg, subject=subject, artifact_type=SIG)
    fallback = index_manifest([
        descriptor(mt, listed_body, alg, artifactType=SBOM, annotations={"from": "fallback"}),
        descriptor(mt, unrelated_body, alg, artifactType=SBOM),
        {"mediaType": OCI_MANIFEST, "digest": digest_of(b"never pushed", alg), "size": 12},
    ])
    fallback_digest = digest_of(fallback)
    assert put_manifest(angos, ns, _fallback_tag(subject_digest), fallback, OCI_INDEX).status_code == 201
    digests = sorted(e["digest"] for e in _referrers(angos, ns, subject_digest).json()["manifests"])
    assert digests == sorted([listed, other_subject])  # each once; no subject-less, missing or fallback entry
    assert unrelated not in digests and fallback_digest not in digests

    # With the push-time index gone (a store from before the referrers API), the
    # fallback tag alone still yields the manifests it lists that name this subject.
    _forget_referrer_index(angos, ns)
    entries = _referrers(angos, ns, subject_digest).json()["manifests"]
    assert entries == [{"mediaType": mt, "digest": listed, "size": len(listed_body), "artifactType": SBOM,
                        "annotations": {"from": "fallback"}}]
    filtered = _referrers(angos, ns, subject_digest, artifactType=SIG)
    assert filtered.json()["manifests"] == []


@pytest.mark.parametrize("bad", ["sha256:abc", "sha256:" + "Z" * 64, "nodigest", "sha512:" + "a" * 64])
def test_referrers_with_a_malformed_digest_is_digest_invalid(angos, bad):
    assert_oci_error(requests.get(angos.v2(f"{uniq('ref')}/referrers/{bad}")), 400, "DIGEST_INVALID")


def _follow(server, first: requests.Response) -> list[list[str]]:
    """Digests page by page, following ``Link: <...>; rel="next"`` to the end."""
    pages, r = [], first
    while True:
        pages.append([e["digest"] for e in r.json()["manifests"]])
        link = r.headers.get("Link")
        if link is None:
            return pages
        assert link.endswith('>; rel="next"') and link.startswith("</v2/")
        r = requests.get(f"{server.url}{link[1:link.index('>')]}")
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("alg", ALGS)
def test_referrers_page_with_n_and_last_and_the_link_keeps_the_filter(angos, alg):
    ns = uniq("ref")
    subject_digest, subject = _subject(angos, ns, alg)
    sboms = sorted(push_image(angos, ns, alg, subject=subject, artifact_type=SBOM)[0] for _ in range(5))
    sig = push_image(angos, ns, alg, subject=subject, artifact_type=SIG)[0]
    everything = _referrers(angos, ns, subject_digest)
    assert "Link" not in everything.headers
    assert [e["digest"] for e in everything.json()["manifests"]] == sorted([*sboms, sig])

    first = _referrers(angos, ns, subject_digest, n=2, artifactType=SBOM)
    assert first.headers["OCI-Filters-Applied"] == "artifactType"
    pages = _follow(angos, first)
    assert pages == [sboms[0:2], sboms[2:4], sboms[4:5]]
    assert _referrers(angos, ns, subject_digest, last=sboms[2], artifactType=SBOM).json()["manifests"] == \
        [e for e in everything.json()["manifests"] if e["digest"] in sboms[3:]]
    empty = _referrers(angos, ns, subject_digest, n=0)
    assert empty.json()["manifests"] == [] and "Link" not in empty.headers


def test_a_referrer_list_larger_than_a_manifest_is_split_with_links(angos_factory):
    server = angos_factory(extra='[global]\nmax_manifest_size = "4KiB"\n', workers=1)
    ns = uniq("ref")
    subject_digest, subject = _subject(server, ns, "sha256")
    # Each descriptor carries ~1.5 KiB of annotations, so two fit in a 4 KiB index, not three.
    pushed = sorted(push_image(server, ns, "sha256", subject=subject, artifact_type=SBOM,
                               annotations={"org.example.note": "x" * 1500})[0] for _ in range(5))
    first = _referrers(server, ns, subject_digest)
    assert len(first.content) <= 4096
    pages = _follow(server, first)
    assert [d for page in pages for d in page] == pushed
    assert [len(p) for p in pages] == [2, 2, 1]
