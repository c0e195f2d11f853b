"""``angos replication-status NAMESPACE[:TAG] [--wait 2m] [--downstream NAME] [--url URL]``.

Asks a running server's status API (:mod:`angos.api.replication_status`)
whether a tag, or every tag of a namespace, has reached its downstreams, for
CI steps that push and then wait. The server is ``--url`` or ``$ANGOS_URL``;
``$ANGOS_USERNAME`` and ``$ANGOS_PASSWORD`` are sent as Basic credentials
(``$REQUESTS_CA_BUNDLE`` names a private CA for HTTPS). The configuration
files are not read.

``--wait`` keeps asking (each request long-polls up to the server's
``max_status_wait_secs``) until everything is in sync, nothing more can
change without an operator (what is left is ``unsupported``, or ``failed``
and dead-lettered) or the time is up. One line is
printed, and the exit code says how it ended:

- ``0``: in sync on every downstream (or the one ``--downstream``);
- ``1``: not in sync; the line names each downstream that is not, its state
  and since when (``nginx/app:v1 not in sync: eu-region pending since ...``);
- ``2``: the question could not be answered: the server is unreachable,
  refused the credentials (401/403), does not know the namespace or tag
  (404), no downstream replicates the namespace, or the arguments are wrong.

``--json`` prints the server's last answer instead of the line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from urllib.parse import quote, urljoin

IN_SYNC, NOT_IN_SYNC, ERROR = 0, 1, 2
SLACK_SECS = 30.0  # beyond the wait itself, how long one answer may take to arrive


class _Failure(Exception):
    pass


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Tell whether a tag (or every tag of a namespace) has reached its downstreams."
    p.add_argument("target", metavar="NAMESPACE[:TAG]", help="e.g. nginx/app:v1, or nginx/app for every tag")
    p.add_argument("--wait", metavar="DURATION", help="wait up to this long for it to be in sync, e.g. 2m")
    p.add_argument("--downstream", metavar="NAME", help="only this downstream")
    p.add_argument("--url", help="the server, e.g. https://angos.example.com (default: $ANGOS_URL)")
    p.add_argument("--json", action="store_true", help="print the server's answer as JSON")


def run(args, config_paths=None) -> int:
    try:
        return _run(args)
    except _Failure as exc:
        print(f"angos replication-status: {exc}", file=sys.stderr)
        return ERROR


def _run(args) -> int:
    import requests

    from ..config import parse_duration
    from ..oci.errors import OciError
    from ..oci.reference import validate_name, validate_tag

    base = (args.url or os.environ.get("ANGOS_URL") or "").rstrip("/")
    if not base:
        raise _Failure("no server: pass --url or set ANGOS_URL")
    ns, _, tag = args.target.partition(":")
    try:
        validate_name(ns)
        if tag:
            validate_tag(tag)
        wait = parse_duration(args.wait, examples="30s, 2m or 5m") if args.wait else 0.0
    except (OciError, ValueError) as exc:
        raise _Failure(str(exc)) from None
    user, password = os.environ.get("ANGOS_USERNAME"), os.environ.get("ANGOS_PASSWORD")
    session = requests.Session()
    if user is not None:
        session.auth = (user, password or "")
    path = f"/_ext/{ns}/_replication" + (f"/{quote(tag)}" if tag else "")
    deadline = time.monotonic() + wait
    while True:
        asked = time.monotonic()
        status, docs = _ask(session, base, path, args.downstream, max(0.0, deadline - asked), listing=not tag)
        if not any(d["downstreams"] for d in docs):
            raise _Failure(f"no downstream replicates {ns}" if docs else f"{ns} has no tags")
        if status == 200 or time.monotonic() >= deadline or not _may_change(docs):
            break
        # The server's own cap (max_status_wait_secs) ended that wait; ask again. An answer that
        # came back at once (a server stopping) is not asked again straight away.
        if time.monotonic() - asked < 1.0:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    if args.json:
        print(json.dumps(docs if not tag else docs[0], indent=2))
    else:
        print(_line(args.target, docs, status == 200))
    return IN_SYNC if status == 200 else NOT_IN_SYNC


def _ask(session, base: str, path: str, downstream: str | None, wait: float,
         listing: bool) -> tuple[int, list[dict]]:
    """GET every page of ``path`` (each page long-polls what is left of ``wait``): the worst status
    (202 if any page is not in sync) and the tag documents."""
    import requests

    params = {"n": "1000"} if listing else {}
    if downstream:
        params["downstream"] = downstream
    url, docs, worst = base + path, [], 200
    deadline = time.monotonic() + wait
    while url:
        left = max(0.0, deadline - time.monotonic())
        query = dict(params, wait=f"{left:.3f}") if left > 0 else params
        try:
            resp = session.get(url, params=query, timeout=(10, left + SLACK_SECS))
        except requests.RequestException as exc:
            raise _Failure(f"cannot reach {base}: {exc}") from None
        if resp.status_code not in (200, 202):
            raise _Failure(f"{base} answered {resp.status_code}: {_error(resp)}")
        try:
            doc = resp.json()
        except ValueError:
            raise _Failure(f"{base} answered {resp.status_code} without a status document") from None
        worst = max(worst, resp.status_code)
        docs.extend(doc["tags"] if "tags" in doc else [doc])
        nxt = resp.links.get("next", {}).get("url")
        url = urljoin(url, nxt) if nxt else None
        params = {}  # the next link carries n, last and downstream
    return worst, docs


def _error(resp) -> str:
    try:
        err = resp.json()["errors"][0]
        return f"{err['code']}: {err.get('message', '')}"
    except (ValueError, KeyError, IndexError, TypeError):
        return (resp.text or "").strip()[:200] or resp.reason or ""


def _may_change(docs: list[dict]) -> bool:
    """The server's rule (angos.replication.status.may_change), on its answer."""
    from .status import may_change

    return may_change([v for d in docs for v in d["downstreams"]])


def _line(target: str, docs: list[dict], ok: bool) -> str:
    if ok:
        names = sorted({v["downstream"] for d in docs for v in d["downstreams"]})
        what = f"{docs[0]['digest'] or 'deleted'}" if len(docs) == 1 and ":" in target else f"{len(docs)} tags"
        return f"{target} in sync ({what}) on {', '.join(names)}"
    parts = []
    for d in docs:
        for v in d["downstreams"]:
            if v["state"] == "in_sync":
                continue
            part = f"{v['downstream']} {v['state']} since {v['since']}"
            if ":" not in target:
                part = f"{d['tag']}: {part}"
            if v.get("attempts"):
                part += f" after {v['attempts']} attempt(s)"
            if v["state"] == "superseded":
                part += f" (it holds {v.get('remote_digest') or 'a delete'} from {v.get('remote_author_time')})"
            elif v.get("error"):
                part += f" ({' '.join(str(v['error']).split())})"
            parts.append(part)
    shown = parts[:5] + ([f"and {len(parts) - 5} more"] if len(parts) > 5 else [])
    return f"{target} not in sync: " + "; ".join(shown)
