"""Smoke: a real gunicorn server answers the version check and a push/pull round trip."""

import hashlib

import requests


def test_api_version_check_answers_200(angos):
    r = requests.get(angos.v2(""))
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_monolithic_push_then_pull_returns_same_bytes(angos):
    data = b"smoke test blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(angos.v2(f"smoke/blobs/uploads/?digest={digest}"), data=data)
    assert r.status_code == 201, r.text
    r = requests.get(angos.v2(f"smoke/blobs/{digest}"))
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Docker-Content-Digest"] == digest
