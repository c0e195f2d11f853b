"""``mode`` and ``namespace_filter`` gate the event path (SPEC 8.1, 8.5)."""

from __future__ import annotations

import requests

from ..conftest import wait_for
from .conftest import push_counts, remote_digest, settled, source_config
from .test_failures import OCI, _small_manifest


def test_modes_and_filters_gate_live_pushes(angos_factory):
    filtered, reconcile_only, everything = (angos_factory() for _ in range(3))
    source = angos_factory(config_text=source_config(
        {"name": "filtered", "url": filtered.url, "mode": "event-only", "namespace_filter": ["^nginx/yes"]},
        {"name": "reconcile", "url": reconcile_only.url, "mode": "reconcile-only"},
        {"name": "everything", "url": everything.url},
        extra='\n[repository."other"]\n[repository."other".access_policy]\ndefault = "allow"\n'))
    pushed = {}
    for ns in ("nginx/yes", "nginx/no", "other/app"):
        body, d = _small_manifest(source, ns, ns)
        assert requests.put(source.v2(f"{ns}/manifests/v1"), data=body, headers={"Content-Type": OCI}).status_code == 201
        pushed[ns] = d
    assert wait_for(lambda: remote_digest(everything, "nginx/no", "v1") == pushed["nginx/no"], timeout=10)
    assert wait_for(lambda: remote_digest(everything, "nginx/yes", "v1") == pushed["nginx/yes"], timeout=10)
    assert wait_for(lambda: remote_digest(filtered, "nginx/yes", "v1") == pushed["nginx/yes"], timeout=10)
    # Every job the pushes queued has run: what has not arrived by now never will.
    assert settled([source]) == [3.0]  # everything x2 and filtered x1: nothing else was even queued
    assert remote_digest(filtered, "nginx/no", "v1") is None
    assert remote_digest(reconcile_only, "nginx/yes", "v1") is None
    assert remote_digest(reconcile_only, "nginx/no", "v1") is None
    assert remote_digest(everything, "other/app", "v1") is None  # not in a replicated repository
    counts = push_counts(source)
    assert counts.get(("reconcile", "pushed"), 0) == 0  # (its series exists from start-up, at 0)
    assert counts[("filtered", "pushed")] == 1
    assert counts[("everything", "pushed")] == 2


def test_repush_of_same_digest_enqueues_nothing(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}))
    body, d = _small_manifest(source, "nginx/same", "same")
    for _ in range(3):
        assert requests.put(source.v2("nginx/same/manifests/v1"), data=body,
                            headers={"Content-Type": OCI}).status_code == 201
    assert wait_for(lambda: remote_digest(peer, "nginx/same", "v1") == d, timeout=10)
    assert settled([source]) == [1.0]  # the re-pushes queued nothing, not even a coalesced job


def test_push_then_immediate_delete_never_leaves_the_tag_on_the_downstream(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}))
    final = {}
    for i in range(10):
        body, d = _small_manifest(source, "nginx/churn", f"c{i}")
        assert requests.put(source.v2(f"nginx/churn/manifests/t{i}"), data=body,
                            headers={"Content-Type": OCI}).status_code == 201
        assert requests.delete(source.v2(f"nginx/churn/manifests/t{i}")).status_code == 202
        if i % 2:  # and every other tag comes straight back
            assert requests.put(source.v2(f"nginx/churn/manifests/t{i}"), data=body,
                                headers={"Content-Type": OCI}).status_code == 201
            final[f"t{i}"] = d

    def converged():
        tags = requests.get(peer.v2("nginx/churn/tags/list")).json().get("tags") or []
        return sorted(tags) == sorted(final) and all(remote_digest(peer, "nginx/churn", t) == d
                                                     for t, d in final.items())

    assert wait_for(converged, timeout=30), requests.get(peer.v2("nginx/churn/tags/list")).text
    settled([source])  # every job has run: nothing still queued can undo the state checked next
    assert converged()
