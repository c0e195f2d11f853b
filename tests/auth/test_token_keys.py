"""Registry tokens in-process: issuing, verifying, key rotation and keys shared through a store.

:class:`angos.auth.token.TokenService` over a real filesystem store (and, where
servers share keys, an S3 bucket on moto as well), with the clock as a parameter, so a test can stand in another signing period or after
a token's expiry without waiting (no timed assertions). The end-to-end flow
over HTTP is tests/auth/test_token_flow.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid

import pytest

from angos.auth.token import InvalidToken, TokenService
from angos.auth.token_keys import GRACE, TokenKeys
from angos.config import ConfigError, load_config_text
from angos.registry import paths
from angos.storage import FsStore

from .conftest import argon_hash

DAY = 86400
T0 = 1_800_000_000 - 1_800_000_000 % DAY + 3600  # one hour into a day (the signing period with 1-day rotation)


def config(tmp_path, token: str = "", alice_pw: str = "alice-pw"):
    return load_config_text(f"""
[server]
bind_address = "127.0.0.1"
[blob_store.fs]
root_dir = "{tmp_path / 'data'}"
[auth.identity.alice]
username = "alice"
password = "{argon_hash(alice_pw)}"
[auth.token]
{token if "key_rotation_days" in token else "key_rotation_days = 1  # one signing period per day"}
{"" if "key_rotation_days" in token else token}
""")


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    return FsStore(str(tmp_path / "data"))


@pytest.fixture(params=["fs", "s3"])
def shared(request, tmp_path):
    """Makes store objects that all reach one place: a filesystem root, or a moto S3 bucket and prefix
    (as two servers sharing a metadata store each have their own)."""
    if request.param == "fs":
        return lambda: FsStore(str(tmp_path / "data"))
    from tests.conftest import make_bucket
    from tests.storage.conftest import s3_store

    endpoint = request.getfixturevalue("moto_server")
    bucket, prefix = make_bucket(endpoint), f"t-{uuid.uuid4().hex[:8]}"
    return lambda: s3_store(endpoint, bucket, prefix)


def claims(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def header(token: str) -> dict:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resign(token: str, new_claims: dict | None = None, new_header: dict | None = None,
           secret: bytes | None = None) -> str:
    """The token with other claims/header, signed with ``secret`` (or keeping the old signature)."""
    h, p, sig = token.split(".")
    if new_header is not None:
        h = b64(json.dumps(new_header).encode())
    if new_claims is not None:
        p = b64(json.dumps(new_claims).encode())
    if secret is not None:
        sig = b64(hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest())
    return f"{h}.{p}.{sig}"


def test_an_identified_token_names_the_identity_and_verifies(tmp_path, store):
    from angos.auth.identity import Identity

    svc = TokenService(config(tmp_path), store, Clock(T0))
    token, expires_in, issued_at = svc.issue(Identity(id="alice", username="alice", client_ip="127.0.0.1"))
    assert (expires_in, issued_at) == (300, T0)
    assert header(token) == {"alg": "HS256", "typ": "JWT", "kid": f"{T0 - 3600}-1"}  # period start, days
    c = claims(token)
    assert (c["iss"], c["aud"], c["sub"], c["name"], c["iat"], c["exp"]) == ("angos", "angos", "alice", "alice",
                                                                              T0, T0 + 300)
    assert "grants" not in c and "access" not in c and "ip" not in c  # who, never what or from where
    assert svc.verify(token) == ("alice", "alice", (), (), None)
    assert svc.ours(token) and not svc.ours("not.a.token")


def test_an_anonymous_token_carries_no_subject_and_certificate_names_when_there_were_some(tmp_path, store):
    from angos.auth.identity import Identity

    svc = TokenService(config(tmp_path), store, Clock(T0))
    anon, _, _ = svc.issue(Identity())
    assert "sub" not in claims(anon) and svc.verify(anon) == (None, None, (), (), None)
    cert, _, _ = svc.issue(Identity(common_names=("builder",), organizations=("Platform",)))
    assert svc.verify(cert) == (None, None, ("builder",), ("Platform",), None)


def test_a_token_expires_at_exp_even_once_remembered(tmp_path, store):
    from angos.auth.identity import Identity

    clock = Clock(T0)
    svc = TokenService(config(tmp_path), store, clock)
    token, _, _ = svc.issue(Identity())
    assert svc.verify(token) == (None, None, (), (), None)  # now remembered
    clock.now = T0 + 299
    assert svc.verify(token) == (None, None, (), (), None)
    clock.now = T0 + 300
    with pytest.raises(InvalidToken) as err:
        svc.verify(token)
    assert err.value.reason == "expired"
    fresh = TokenService(config(tmp_path), store, clock)  # not remembered: checked from scratch
    with pytest.raises(InvalidToken) as err:
        fresh.verify(token)
    assert err.value.reason == "expired"


def test_rotation_signs_with_a_new_key_and_the_previous_one_verifies_until_its_tokens_expired(tmp_path, shared):
    from angos.auth.identity import Identity

    store = shared()

    clock = Clock(T0 - 3600 + DAY - 10)  # ten seconds before the period ends
    svc = TokenService(config(tmp_path, "lifetime_secs = 600"), store, clock)
    old, expires_in, _ = svc.issue(Identity())
    assert expires_in == 600  # the key lives 600 s past its period: room for a whole token
    old_kid = header(old)["kid"]
    clock.now += 20  # the next period
    new, _, _ = svc.issue(Identity())
    assert header(new)["kid"] == f"{int(old_kid.split('-')[0]) + DAY}-1"
    other_server = TokenService(config(tmp_path, "lifetime_secs = 600"), shared(), clock)
    assert other_server.verify(old) == (None, None, (), (), None)  # rotated out, still live: read from the store
    assert other_server.verify(new) == (None, None, (), (), None)
    assert sorted(store.children(paths.TOKEN_KEYS)) == sorted([old_kid, header(new)["kid"]])


def test_a_changed_rotation_setting_makes_a_key_of_its_own(tmp_path, store):
    """A 30-day period may start on the day a 1-day key was made: that key must not be reused."""
    from angos.auth.identity import Identity

    start30 = T0 - T0 % (30 * DAY)
    clock = Clock(start30 + 60)
    daily, _, _ = TokenService(config(tmp_path), store, clock).issue(Identity())
    clock.now = start30 + 5 * DAY  # the daily key stopped signing days ago
    monthly, expires_in, _ = TokenService(config(tmp_path, "key_rotation_days = 30"), store, clock).issue(Identity())
    assert (header(daily)["kid"], header(monthly)["kid"]) == (f"{start30}-1", f"{start30}-30")
    assert expires_in == 300


def test_a_key_is_deleted_by_the_next_key_maker_once_its_last_token_expired(tmp_path, shared):
    from angos.auth.identity import Identity

    store = shared()

    start = T0 - 3600
    clock = Clock(start + 60)
    TokenService(config(tmp_path), store, clock).issue(Identity())
    first = f"{start}-1"
    clock.now = start + 2 * DAY + 60  # two periods on: the first key's tokens died long ago
    TokenService(config(tmp_path), store, clock).issue(Identity())
    assert first not in store.children(paths.TOKEN_KEYS)
    # one period on, the previous key is kept: a token it signed may still be live
    clock.now = start + 3 * DAY + 60
    TokenService(config(tmp_path), store, clock).issue(Identity())
    assert f"{start + 2 * DAY}-1" in store.children(paths.TOKEN_KEYS)
    assert GRACE < DAY


def test_a_token_never_outlives_its_key(tmp_path, store):
    """A key made with a short lifetime in force caps tokens issued later with a longer one."""
    from angos.auth.identity import Identity

    clock = Clock(T0 - 3600 + DAY - 100)
    TokenService(config(tmp_path, "lifetime_secs = 60"), store, clock).issue(Identity())  # makes the key
    token, expires_in, _ = TokenService(config(tmp_path, "lifetime_secs = 3600"), store, clock).issue(Identity())
    key = TokenKeys(store, 1, 60, clock).verifying_key(header(token)["kid"])
    assert claims(token)["exp"] == key.expires_at and expires_in == 100 + 60


def test_servers_sharing_a_store_make_one_key_per_period_and_accept_each_others_tokens(tmp_path, shared):
    from angos.auth.identity import Identity

    clock = Clock(T0)
    a = TokenService(config(tmp_path), shared(), clock)
    b = TokenService(config(tmp_path), shared(), clock)
    # both decide to make the period's key: one wins put_if_absent, the other adopts it
    ka = a.keys._load_or_create(f"{T0 - 3600}-1", T0 - 3600)
    kb = b.keys._load_or_create(f"{T0 - 3600}-1", T0 - 3600)
    assert ka == kb
    ta, _, _ = a.issue(Identity(id="alice", username="alice"))
    tb, _, _ = b.issue(Identity())
    assert b.verify(ta) == ("alice", "alice", (), (), None) and a.verify(tb) == (None, None, (), (), None)


@pytest.mark.parametrize("change, reason", [
    ("tampered", "invalid"),        # claims changed, signature kept
    ("forged", "invalid"),          # re-signed with a key that is not the registry's
    ("alg-none", "invalid"),        # the classic downgrade
    ("alg-hs512", "invalid"),
    ("other-service", "invalid"),   # a valid signature from a registry with another service name
    ("unknown-kid", "invalid"),
    ("garbage", "invalid"),
])
def test_forged_tampered_or_foreign_tokens_are_refused(tmp_path, store, change, reason):
    from angos.auth.identity import Identity

    svc = TokenService(config(tmp_path), store, Clock(T0))
    token, _, _ = svc.issue(Identity())
    key = svc.keys.signing_key()
    c, h = claims(token), header(token)
    bad = {
        "tampered": lambda: resign(token, {**c, "sub": "alice", "name": "alice"}),
        "forged": lambda: resign(token, {**c, "sub": "alice"}, secret=b"x" * 32),
        "alg-none": lambda: resign(token, {**c, "sub": "alice"}, {**h, "alg": "none"}).rsplit(".", 1)[0] + ".",
        "alg-hs512": lambda: resign(token, None, {**h, "alg": "HS512"}, secret=key.secret),
        "other-service": lambda: resign(token, {**c, "aud": "elsewhere", "iss": "elsewhere"}, secret=key.secret),
        "unknown-kid": lambda: resign(token, None, {**h, "kid": "123-1"}, secret=key.secret),
        "garbage": lambda: "a.b.c\u00e9",
    }[change]()
    with pytest.raises(InvalidToken) as err:
        svc.verify(bad)
    assert err.value.reason == reason


def test_a_token_is_revoked_when_its_identity_goes_or_gets_a_new_password(tmp_path, store):
    from angos.auth.identity import Identity

    clock = Clock(T0)
    token, _, _ = TokenService(config(tmp_path), store, clock).issue(Identity(id="alice", username="alice"))
    for cfg in (config(tmp_path, alice_pw="new-pw"),
                load_config_text(f'[server]\nbind_address = "127.0.0.1"\n[blob_store.fs]\n'
                                 f'root_dir = "{tmp_path / "data"}"\n')):
        with pytest.raises(InvalidToken) as err:
            TokenService(cfg, store, clock).verify(token)  # as after a configuration reload
        assert err.value.reason == "revoked"


def test_kids_not_in_memory_are_looked_up_in_the_store_at_a_bounded_rate(tmp_path, store):
    from angos.auth.token_keys import LOOKUP_BURST

    reader = TokenKeys(store, 1, 300, Clock(T0))
    for i in range(LOOKUP_BURST):
        assert reader.verifying_key(f"{900 + i}-1") is None  # made up: each one listing of the stored keys
    made = TokenKeys(store, 1, 300, Clock(T0)).signing_key()  # another server makes the period's key
    assert reader.verifying_key(made.kid) is None  # real, but the lookups are spent for now
    for bad in ("../../etc", "1" * 13 + "-1", "123"):
        assert reader.verifying_key(bad) is None  # not a kid: never looked up
    reader._lookups = 1.0  # a second later
    assert reader.verifying_key(made.kid) == made


@pytest.mark.parametrize("line, message", [
    ("lifetime_secs = 30", "auth.token.lifetime_secs: must be between 60 and 86400"),
    ("lifetime_secs = '5m'", "auth.token.lifetime_secs: expected an integer"),
    ("key_rotation_days = 0", "auth.token.key_rotation_days: must be between 1 and 3650"),
    ('service = "my registry"', "auth.token.service: expected letters, digits"),
    ('realm = "registry.example.com/token"', "auth.token.realm: expected an http:// or https:// URL"),
    ("lifetime = 300", "auth.token.lifetime: unknown key (did you mean 'lifetime_secs'?)"),
])
def test_a_bad_token_setting_fails_the_config_with_its_key(tmp_path, line, message):
    with pytest.raises(ConfigError) as err:
        config(tmp_path, line)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_credentials_become_an_identity_whatever_their_kind(tmp_path, store):
    """The one authenticate step the gate and the token endpoint share (angos.auth.authenticate)."""
    from angos.auth import AccessControl
    from angos.auth.authenticate import credential_kind
    from angos.auth.identity import Identity
    from angos.oci.errors import Unauthorized

    cfg = config(tmp_path)
    ac = AccessControl(cfg, tokens=TokenService(cfg, store, Clock(T0)))
    basic = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
    assert [credential_kind(h) for h in (None, "", "Basic Og==", " basic  Og== ", basic, "Bearer x", "Digest x")] == [
        "none", "none", "none", "none", "basic", "bearer", "other"]
    assert ac.authenticate("Basic Og==", "10.0.0.1").anonymous  # empty user and password: nobody
    by_password = ac.authenticate(basic, "10.0.0.1")
    token, _, _ = ac.tokens.issue(Identity(id="alice", username="alice", common_names=("builder",),
                                           organizations=("Platform",)))
    by_token = ac.authenticate(f"Bearer {token}", "10.0.0.1")
    assert (by_token.id, by_token.username, by_token.client_ip) == (by_password.id, by_password.username, "10.0.0.1")
    assert (by_token.common_names, by_token.organizations) == (("builder",), ("Platform",))
    # a connection with a verified certificate of its own: that certificate counts, not the token's copy
    live = ac.authenticate(f"Bearer {token}", "10.0.0.1", ("other",), ("Elsewhere",))
    assert (live.id, live.common_names, live.organizations) == ("alice", ("other",), ("Elsewhere",))
    for bad in ("Basic " + base64.b64encode(b"alice:").decode(), "Bearer " + token[:-2], "Digest x"):
        with pytest.raises(Unauthorized):
            ac.authenticate(bad, "10.0.0.1")
    with pytest.raises(Unauthorized):  # without a token service, bearer tokens are refused
        AccessControl(cfg).authenticate(f"Bearer {token}", "10.0.0.1")
