"""Server TLS contexts that follow their files, and the mTLS peer identity.

Contract:

- ``ReloadingTLS(tls_config)`` builds an :class:`ssl.SSLContext` from
  ``[server.tls]`` (server certificate bundle and key; with
  ``client_ca_bundle``, client certificates verified against it,
  ``client_auth = "required"`` rejecting clients without one during the
  handshake). Building it raises :class:`~angos.config.ConfigError` when a file
  is missing or unusable.
- ``.context`` is the context handed to the server (gunicorn's
  ``ssl_context`` hook). It never changes, but its SNI callback runs on every
  handshake (OpenSSL calls it whether or not the client sent a server name)
  and checks the files' identity (inode, size, mtime): when any changed, a
  fresh context is built from them and the connection is switched to it.
  So replaced certificates, keys or client CAs are served on the next
  connection with no restart and no signal. If the new files do not load
  (for example the key was replaced but not yet the certificate) the error is
  logged and the last good context stays in use; the next handshake tries
  again.
- ``peer_names(sock)`` reads a *verified* client certificate from a TLS socket
  and returns ``(common_names, organizations)`` of its subject, empty tuples
  when there is none. ``getpeercert()`` only returns the subject of a
  certificate that passed chain verification against the client CA bundle.
"""

from __future__ import annotations

import logging
import ssl

from ..config import ConfigError
from ..reload import file_state

log = logging.getLogger("angos.tls")


class ReloadingTLS:
    def __init__(self, tls):
        self.tls = tls
        self.paths = [p for p in (tls.server_certificate_bundle, tls.server_private_key, tls.client_ca_bundle) if p]
        self._state = file_state(self.paths)
        try:
            self.context = self._build()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"server.tls: cannot load the certificate, key or client CA bundle: {exc}") from None
        self.context.sni_callback = self._on_hello
        self._current = self.context

    def _build(self) -> ssl.SSLContext:
        tls = self.tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certfile=tls.server_certificate_bundle, keyfile=tls.server_private_key)
        if tls.client_ca_bundle:
            ctx.load_verify_locations(cafile=tls.client_ca_bundle)
            ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_auth == "required" else ssl.CERT_OPTIONAL
        return ctx

    def current(self) -> ssl.SSLContext:
        """The newest context that loaded, rebuilding it first when the files changed."""
        state = file_state(self.paths)
        if state != self._state:
            try:
                fresh = self._build()
            except (OSError, ssl.SSLError) as exc:
                log.error("TLS files changed but do not load (%s); still serving the previous certificate", exc)
            else:
                self._current = fresh
                self._state = state
                log.info("TLS certificate, key or client CA bundle changed; reloaded")
        return self._current

    def _on_hello(self, sock, server_name, original):
        ctx = self.current()
        if ctx is not original:
            sock.context = ctx
        return None


def peer_names(sock) -> tuple[tuple[str, ...], tuple[str, ...]]:
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return (), ()
    try:
        cert = getpeercert()
    except (ValueError, OSError):
        return (), ()
    if not cert:
        return (), ()
    cns, orgs = [], []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cns.append(value)
            elif key == "organizationName":
                orgs.append(value)
    return tuple(cns), tuple(orgs)
