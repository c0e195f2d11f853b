"""Replication to a downstream over HTTPS: a private CA (``server_ca_bundle``)
and a required client certificate (``client_certificate``/``client_private_key``)."""

from __future__ import annotations

import requests

from ..auth.conftest import make_pki
from ..conftest import wait_for
from .conftest import source_config
from .test_failures import OCI, _small_manifest


def test_https_downstream_with_private_ca_and_client_certificate(angos_factory, tmp_path):
    pki = make_pki(tmp_path / "pki")
    cert, key = pki.client("replicator", "Replication")
    peer = angos_factory(start=False, extra=f"""
[server.tls]
server_certificate_bundle = "{pki.server_cert}"
server_private_key = "{pki.server_key}"
client_ca_bundle = "{pki.ca}"
client_auth = "required"
""")
    peer.url = f"https://127.0.0.1:{peer.port}"
    peer.start(wait=False)
    assert wait_for(lambda: _reachable(peer.url, pki.ca, (cert, key)), timeout=30)
    # Without a client certificate the TLS handshake itself is refused.
    try:
        requests.get(peer.url + "/v2/", verify=str(pki.ca), timeout=5)
        refused = False
    except requests.exceptions.SSLError:
        refused = True
    except requests.exceptions.ConnectionError:
        refused = True
    assert refused

    source = angos_factory(config_text=source_config({
        "name": "secure", "url": f"https://127.0.0.1:{peer.port}", "server_ca_bundle": str(pki.ca),
        "client_certificate": cert, "client_private_key": key}))
    body, d = _small_manifest(source, "nginx/tls", "tls")
    assert requests.put(source.v2("nginx/tls/manifests/v1"), data=body, headers={"Content-Type": OCI}).status_code == 201

    def landed():
        r = requests.head(f"{peer.url}/v2/nginx/tls/manifests/v1", verify=str(pki.ca), cert=(cert, key))
        return r.status_code == 200 and r.headers["Docker-Content-Digest"] == d

    failed = lambda: requests.get(source.url + "/_ext/_jobs/failed?queue=replication").text  # noqa: E731
    assert wait_for(landed, timeout=15), failed()


def _reachable(url, ca, cert) -> bool:
    try:
        return requests.get(url + "/healthz", verify=str(ca), cert=cert, timeout=2).status_code == 200
    except requests.RequestException:
        return False
