"""``tags/list`` and ``_catalog`` over real HTTP: lexical order, ``n``/``last``
pagination, ``n=0``, and ``Link: <...>; rel="next"`` that a client can follow."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from .helpers import absolute, assert_error_shape, assert_oci_error, push_blob, push_image, put_manifest, uniq

TAGS = ["1.0", "1.10", "1.2", "Beta", "alpha", "latest", "v2"]  # sorted() order == lexical byte order


@pytest.fixture(scope="module")
def tagged(angos):
    ns = uniq("tags")
    d, body, mt, _ = push_image(angos, ns)
    for t in reversed(TAGS):
        assert put_manifest(angos, ns, t, body, mt).status_code == 201
    return ns


def _next_link(server, r: requests.Response) -> str | None:
    link = r.headers.get("Link")
    if link is None:
        return None
    assert 'rel="next"' in link, link
    return absolute(server, r.links["next"]["url"])


def test_tags_list_is_complete_and_lexically_ordered(angos, tagged):
    r = requests.get(angos.v2(f"{tagged}/tags/list"))
    assert r.status_code == 200
    assert r.json() == {"name": tagged, "tags": sorted(TAGS)}
    assert "Link" not in r.headers


def test_tags_list_pages_with_n_and_link_until_done(angos, tagged):
    url, seen, pages = angos.v2(f"{tagged}/tags/list?n=3"), [], 0
    while url:
        r = requests.get(url)
        assert r.status_code == 200
        page = r.json()["tags"]
        assert 0 < len(page) <= 3
        seen += page
        pages += 1
        url = _next_link(angos, r)
        if url:
            query = parse_qs(urlsplit(url).query)
            assert query["n"] == ["3"] and query["last"] == [page[-1]]
    assert seen == sorted(TAGS)
    assert pages == 3


def test_tags_list_last_starts_after_the_given_tag(angos, tagged):
    r = requests.get(angos.v2(f"{tagged}/tags/list"), params={"last": "Beta"})
    assert r.json()["tags"] == [t for t in sorted(TAGS) if t > "Beta"]
    assert "Link" not in r.headers
    r = requests.get(angos.v2(f"{tagged}/tags/list"), params={"n": 2, "last": "1.2"})
    assert r.json()["tags"] == ["Beta", "alpha"]
    assert _next_link(angos, r) is not None
    r = requests.get(angos.v2(f"{tagged}/tags/list"), params={"n": 2, "last": "v2"})
    assert r.json()["tags"] == []
    assert "Link" not in r.headers


def test_tags_list_n_equal_to_the_remainder_has_no_link(angos, tagged):
    r = requests.get(angos.v2(f"{tagged}/tags/list"), params={"n": len(TAGS)})
    assert r.json()["tags"] == sorted(TAGS)
    assert "Link" not in r.headers


def test_tags_list_n_zero_is_empty_without_link(angos, tagged):
    r = requests.get(angos.v2(f"{tagged}/tags/list"), params={"n": 0})
    assert r.status_code == 200
    assert r.json()["tags"] == []
    assert "Link" not in r.headers


def test_tags_list_of_an_unknown_namespace_is_name_unknown(angos):
    assert_oci_error(requests.get(angos.v2(f"{uniq('tags')}/tags/list")), 404, "NAME_UNKNOWN")


def test_tags_list_of_a_namespace_with_only_untagged_content_is_empty(angos):
    ns = uniq("tags")
    push_image(angos, ns)  # by digest only
    r = requests.get(angos.v2(f"{ns}/tags/list"))
    assert r.status_code == 200
    assert r.json() == {"name": ns, "tags": []}


@pytest.mark.parametrize("n", ["-1", "abc", "1.5"])
def test_non_integer_n_is_a_400_oci_error(angos, tagged, n):
    for path in (f"{tagged}/tags/list", "_catalog"):
        r = requests.get(angos.v2(path), params={"n": n})
        assert r.status_code == 400
        assert_error_shape(r)


def test_catalog_pages_with_n_last_and_link(angos):
    prefix = uniq("cat")
    names = [f"{prefix}/a", f"{prefix}/b", f"{prefix}/b/c", f"{prefix}/d"]
    for ns in names:
        push_image(angos, ns, tag="t")
    push_blob(angos, f"{prefix}/blob-only", b"a blob but no manifest")  # not a repository yet
    r = requests.get(angos.v2("_catalog"))
    assert r.status_code == 200
    everything = r.json()["repositories"]
    assert everything == sorted(everything)
    assert [n for n in everything if n.startswith(prefix)] == names

    r = requests.get(angos.v2("_catalog"), params={"n": 2, "last": prefix})
    assert r.json()["repositories"] == names[:2]
    url = _next_link(angos, r)
    assert url is not None
    assert parse_qs(urlsplit(url).query)["last"] == [names[1]]
    r = requests.get(url)
    assert r.json()["repositories"] == names[2:]

    r = requests.get(angos.v2("_catalog"), params={"n": 0})
    assert r.json()["repositories"] == []
    assert "Link" not in r.headers
    r = requests.get(angos.v2("_catalog"), params={"last": names[-2]})
    assert r.json()["repositories"][0] == names[-1]
