"""The outbound registry client against scripted HTTP servers on 127.0.0.1: what a remote sends
back is bounded (redirect bodies are never read, other answers are read up to a limit, listings
stop after a number of pages), and credentials go only to the configured remote's origin.

The servers are :class:`tests.scripted.Scripted` (the ``scripted`` fixture): handlers are functions
of the request, and each server records the requests it saw and how many bytes of each answer's body
it managed to send.
"""

from __future__ import annotations

import pytest

from angos.config import Upstream
from angos.remote import client as client_module
from angos.remote.client import ClientError, RegistryClient

MiB = 1024 * 1024


def remote(url: str, **options) -> RegistryClient:
    return RegistryClient(url, Upstream(url=url, **options))


def zeros(total: int, block: int = MiB):
    for _ in range(total // block):
        yield bytes(block)


def test_a_redirect_answers_body_is_never_read(scripted):
    # A hostile (or broken) remote answers 307 with a 256 MiB body: requests alone would read all
    # of it before following the redirect, whatever stream= says.
    up = scripted()
    up.routes["/v2/app/blobs/sha256:x"] = lambda r: (307, {"Location": "/final", "Content-Length": str(256 * MiB)},
                                                     zeros(256 * MiB))
    up.routes["/final"] = lambda r: (200, {}, b"the blob")
    with remote(up.url).get_blob("app", "sha256:x") as resp:
        assert resp.status_code == 200 and resp.raw.read() == b"the blob"
    # Whatever the socket buffers took before the client closed: nowhere near the whole body.
    assert up.sent_when_done("/v2/app/blobs/sha256:x") < 32 * MiB


def test_credentials_follow_a_redirect_on_the_same_origin_only(scripted):
    up, storage = scripted(), scripted()
    challenge = {"WWW-Authenticate": 'Basic realm="test"'}
    authorised = lambda r, then: (307, {"Location": then}, b"") if r.headers.get("Authorization") \
        else (401, challenge, b"")  # noqa: E731
    up.routes["/v2/app/blobs/sha256:a"] = lambda r: authorised(r, "/v2/app/blobs/sha256:a-here")
    up.routes["/v2/app/blobs/sha256:a-here"] = lambda r: authorised(r, f"{storage.url}/object")
    storage.routes["/object"] = lambda r: (200, {}, b"bytes")
    with remote(up.url, username="mirror", password="s3cret").get_blob("app", "sha256:a") as resp:
        assert resp.raw.read() == b"bytes"
    assert [h.get("Authorization", "").split(" ")[0] for m, p, h in up.seen] == ["", "Basic", "Basic"]
    assert [h.get("Authorization") for m, p, h in storage.seen] == [None]


def test_more_redirects_than_max_redirect_is_a_client_error(scripted):
    up = scripted()
    up.routes["/v2/app/manifests/v1"] = lambda r: (302, {"Location": r.path}, b"")
    with pytest.raises(ClientError, match="more than 2 redirects"):
        remote(up.url, max_redirect=2).get_manifest("app", "v1")
    assert len(up.seen) == 3  # the request and the two redirects it may follow


def test_an_answer_longer_than_the_limit_is_a_client_error_and_is_not_read_whole(scripted, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_BODY", 64 * 1024)
    up = scripted()
    up.routes["/v2/app/manifests/v1"] = lambda r: (200, {"Content-Length": str(256 * MiB)}, zeros(256 * MiB))
    up.routes["/v2/app/manifests/v2"] = lambda r: (200, {}, b"x" * (64 * 1024))  # exactly the limit: fine
    with pytest.raises(ClientError, match="longer than 65536 bytes"):
        remote(up.url).get_manifest("app", "v1")
    assert up.sent_when_done("/v2/app/manifests/v1") < 32 * MiB
    assert remote(up.url).get_manifest("app", "v2").content == b"x" * (64 * 1024)


def test_a_token_answer_longer_than_its_limit_is_a_client_error(scripted, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_TOKEN_BODY", 4096)
    up = scripted()
    up.routes["/v2/app/manifests/v1"] = lambda r: (
        401, {"WWW-Authenticate": f'Bearer realm="{up.url}/token",service="reg"'}, b"")
    up.routes["/token"] = lambda r: (200, {"Content-Type": "application/json"},
                                     b'{"token": "' + b"t" * 8192 + b'"}')
    with pytest.raises(ClientError, match="token request .* longer than 4096 bytes"):
        remote(up.url).get_manifest("app", "v1")


def test_a_listing_stops_after_max_pages_and_at_a_page_that_names_itself(scripted, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_PAGES", 5)
    up = scripted()
    pages = iter(range(10**6))
    up.routes["/v2/endless/tags/list"] = lambda r: (
        200, {"Link": f'</v2/endless/tags/list?last={next(pages)}>; rel="next"'}, b'{"tags": ["t"]}')
    up.routes["/v2/loop/tags/list"] = lambda r: (200, {"Link": '</v2/loop/tags/list?n=1000>; rel="next"'},
                                                 b'{"tags": ["t"]}')
    with pytest.raises(ClientError, match="more than 5 pages"):
        remote(up.url).list_tags("endless")
    assert len([p for m, p, h in up.seen if p.startswith("/v2/endless/")]) == 5
    with pytest.raises(ClientError, match="the next page is the same page"):
        remote(up.url).list_tags("loop")
    assert len([p for m, p, h in up.seen if p.startswith("/v2/loop/")]) == 1


def test_the_environments_proxy_and_no_proxy_apply(scripted, monkeypatch):
    # Read once per client and origin rather than per request, but with requests' meaning: HTTP_PROXY
    # carries the request (in absolute form) unless NO_PROXY names the host.
    proxy, up = scripted(), scripted()
    up.routes["/v2/"] = lambda r: (200, {}, b"direct")
    proxy.routes[f"{up.url}/v2/"] = lambda r: (200, {}, b"proxied")
    for var in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    client = remote(up.url)
    assert [client.request("GET", client.url("")).content for _ in range(2)] == [b"proxied", b"proxied"]
    assert [p for m, p, h in proxy.seen] == [f"{up.url}/v2/"] * 2 and up.seen == []

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = remote(up.url)
    assert client.request("GET", client.url("")).content == b"direct"
    assert len(proxy.seen) == 2 and len(up.seen) == 1


def test_netrc_credentials_are_never_sent(scripted, monkeypatch, tmp_path):
    # Credentials come from the configuration only; plain requests would add ~/.netrc's.
    up = scripted()
    up.routes["/v2/"] = lambda r: (200, {}, b"{}")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = remote(up.url)
    client.request("GET", client.url(""))
    assert "Authorization" not in up.seen[0][2]
