"""Reconcile through the change feeds: compare only what changed since the last clean run.

Comparing every tag with an Angos downstream costs O(tags) however little
changed. Both sides keep a change feed (:mod:`.changefeed`), so for each
(repository, downstream) :class:`FeedPlanner` remembers the two cursors the
last clean run started from — this instance's feed and the downstream's —
and the next run reads both feeds from there and compares only the tags they
name, with the same last-writer-wins comparison as a full run
(:func:`angos.replication.reconcile.plan` does the comparing).

:meth:`FeedPlanner.changes` answers ``None`` — compare every tag, as before
the feed existed — when:

- ``--full`` was asked, or no cursors were saved yet for this downstream, or
  they were saved while its ``url``, ``namespace_filter`` or ``prune`` said
  something else (tags the old settings left out were never compared);
- the downstream serves no feed: not Angos (CNCF Distribution answers 404),
  its policy refuses ``list-changes``, or it cannot be reached;
- either feed was trimmed past the saved cursor (``410 CURSOR_EXPIRED``:
  the cursor is older than the tombstone horizon) or has a new epoch (the
  store was replaced);
- either side recorded more than :data:`FEED_LIMIT` changes since.

Otherwise it answers ``{local namespace: {tags}}``: the tags changed in the
namespaces this downstream reconciles (downstream namespaces are mapped back
through the URL's prefix; names that are not valid tags are ignored).
:func:`named_states` then asks the downstream for just those tags' states
(``GET /_ext/<namespace>/_tags?name=...``, up to 100 names a request).

**Cursors are taken before anything is read**: this instance's head when the
planner is built, the downstream's from its first feed answer (``head``: its
clock, minus its ``change_feed_grace``). After the run :meth:`commit` saves
them, under ``_changes/_cursors/`` on the metadata store, for every
downstream whose run was clean — no skipped probe, no failed enqueue, none of
its jobs left queued or dead-lettered — and also after a full comparison, so
the next run can use the feeds. Otherwise the old cursors stay and the next
run reads those changes again. A dry run saves nothing. Changes made while a
run compares are after the saved cursors, so the next run sees them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from urllib.parse import urlencode

from ..oci.errors import CursorExpired
from ..oci.reference import is_valid_tag
from ..registry import paths
from ..registry.timestamps import format_ts, now
from ..storage import NotFound
from .changefeed import ChangeFeed, is_cursor
from ..remote.client import MAX_PAGES
from .client import ClientError
from .mapping import local_namespace

log = logging.getLogger("angos.replication.reconcile")

PAGE = 1000             # feed entries per request (the server's cap)
FEED_LIMIT = 100_000    # more changes than this on one side since the cursor: compare everything instead


def scope(ds) -> str:
    """The downstream settings that decide what a full run compares: cursors saved under others
    say nothing about what this run must compare."""
    return json.dumps([ds.url, list(ds.namespace_filter), bool(ds.prune)])


@dataclass(frozen=True)
class Cursors:
    scope: str              # :func:`scope` of the downstream when they were taken
    local: str
    local_epoch: str
    remote: str
    remote_epoch: str


class _Declined(Exception):
    """The feed path cannot be used for this downstream; the message says why."""


class FeedPlanner:
    def __init__(self, cfg, registry, full: bool = False, dry_run: bool = False):
        self.meta = registry.meta_store
        self.feed = ChangeFeed(self.meta)
        self.full = full
        self.head = ChangeFeed.head(cfg.global_.replication.change_feed_grace)  # before anything is read
        self.epoch = self.feed.state(create=not dry_run)["epoch"]  # a dry run writes nothing, not even this
        self._local: dict[str, list | None] = {}    # since -> this instance's changes after it
        self._to_save: dict[tuple[str, str], Cursors] = {}

    # -- deciding

    def changes(self, repo_key: str, ds, client, targets: dict) -> dict[str, set[str]] | None:
        """The tags to compare with ``ds`` per local namespace of ``targets``, or None for all of them."""
        pair = (repo_key, ds.name)
        base_url = next(iter(targets.values())).base_url
        saved = None if self.full else self._load(pair, scope(ds))
        try:
            if saved is None:
                doc = _fetch(client, base_url, None, 0)
                self._to_save[pair] = self._cursors(ds, doc)
                raise _Declined("--full" if self.full else "no cursors saved yet")
            try:
                doc = _fetch(client, base_url, saved.remote, PAGE)
            except CursorExpired:
                self._to_save[pair] = self._cursors(ds, _fetch(client, base_url, None, 0))
                raise _Declined("the downstream's change feed was trimmed past the saved cursor") from None
            self._to_save[pair] = self._cursors(ds, doc)
            if doc["epoch"] != saved.remote_epoch:
                raise _Declined("the downstream's change feed is new (another epoch)")
            if saved.local_epoch != self.epoch:
                raise _Declined("this instance's change feed is new (another epoch)")
            local = self._local_changes(saved.local)
            remote = _remote_changes(client, base_url, doc)
        except _Declined as why:
            log.info("replicate: downstream=%s repository=%s: comparing every tag (%s)", ds.name, repo_key, why)
            return None
        changed: dict[str, set[str]] = {}
        for c in local:
            if c.namespace in targets and is_valid_tag(c.tag):
                changed.setdefault(c.namespace, set()).add(c.tag)
        for c in remote:
            ns = local_namespace(repo_key, c["namespace"], ds.url)
            if ns in targets and is_valid_tag(c["tag"]):
                changed.setdefault(ns, set()).add(c["tag"])
        log.info("replicate: downstream=%s repository=%s: comparing the %d tag(s) the change feeds name "
                 "(%d change(s) here since %s, %d there since %s)", ds.name, repo_key,
                 sum(len(t) for t in changed.values()), len(local), saved.local, len(remote), saved.remote)
        return changed

    def _cursors(self, ds, doc: dict) -> Cursors:
        return Cursors(scope(ds), self.head, self.epoch, doc["head"], doc["epoch"])

    def _local_changes(self, since: str) -> list:
        if since not in self._local:
            out, cursor = [], since
            try:
                while True:
                    page = self.feed.read(cursor, PAGE)
                    out += page.changes
                    if len(out) > FEED_LIMIT:
                        out = None
                        break
                    if not page.more:
                        break
                    cursor = page.next
            except CursorExpired:
                out = False
            self._local[since] = out
        out = self._local[since]
        if out is None:
            raise _Declined(f"more than {FEED_LIMIT} changes here since the saved cursor")
        if out is False:
            raise _Declined("this instance's change feed was trimmed past the saved cursor")
        return out

    # -- remembering

    def _load(self, pair: tuple[str, str], wanted: str) -> Cursors | None:
        try:
            doc = json.loads(self.meta.get(paths.change_cursors(*pair)))
            cur = Cursors(doc["scope"], doc["local"], doc["local_epoch"], doc["remote"], doc["remote_epoch"])
        except NotFound:
            return None
        except (ValueError, KeyError, TypeError):
            log.warning("replicate: the saved cursors of downstream %s are unreadable: comparing every tag", pair[1])
            return None
        if cur.scope != wanted or not (is_cursor(cur.local) and is_cursor(cur.remote)):
            return None
        return cur

    def commit(self, troubled: set) -> None:
        """Save the cursors taken for every downstream whose run was clean (``troubled`` lists the others)."""
        for pair, cur in self._to_save.items():
            if pair in troubled:
                log.info("replicate: downstream=%s repository=%s: cursors kept (something was skipped or is not "
                         "done); the next run reads these changes again", pair[1], pair[0])
                continue
            doc = {"repository": pair[0], "downstream": pair[1], **asdict(cur), "saved_at": format_ts(now())}
            try:
                self.meta.put(paths.change_cursors(*pair), json.dumps(doc).encode())
            except Exception as exc:  # noqa: BLE001 - the run did its work; the next one compares more
                log.warning("replicate: could not save the cursors of downstream %s (%s): the next run "
                            "starts from the ones saved before", pair[1], exc)


NAMES_PER_REQUEST = 100
QUERY_CHARS = 4000      # well inside the request-line limits of servers (Angos: 8190)


def named_states(item) -> dict[str, dict] | None:
    """The states of the tags ``item.changed`` names on the downstream (a reconcile item), asked by
    name in a few requests; None when it does not answer them (the caller lists the whole namespace)."""
    states: dict[str, dict] = {}
    batches, batch, size = [], [], 0
    for tag in item.changed:
        if batch and (len(batch) == NAMES_PER_REQUEST or size + len(tag) + 6 > QUERY_CHARS):
            batches.append(batch)
            batch, size = [], 0
        batch.append(tag)
        size += len(tag) + 6
    if batch:
        batches.append(batch)
    for names in batches:
        url = f"{item.target.base_url}/_ext/{item.remote}/_tags?" + urlencode([("name", t) for t in names])
        try:
            resp = item.client.request("GET", url, item.client.scope(item.remote, "pull"))
            if resp.status_code != 200:
                return None
            for e in resp.json().get("tags"):
                if e["name"] in names:
                    states[e["name"]] = e
        except (ClientError, ValueError, AttributeError, TypeError, KeyError, RecursionError):
            return None
    return states


def _fetch(client, base_url: str, since: str | None, n: int) -> dict:
    """One page of the downstream's feed. Raises CursorExpired (410) or _Declined (no feed there)."""
    query = {"n": n} if since is None else {"since": since, "n": n}
    url = f"{base_url}/_ext/_changes?{urlencode(query)}"
    try:
        resp = client.request("GET", url)
    except ClientError as exc:
        raise _Declined(f"its change feed is unreachable: {exc}") from None
    if resp.status_code == 410:
        raise CursorExpired()
    if resp.status_code != 200:
        raise _Declined(f"it serves no change feed here (GET /_ext/_changes answered {resp.status_code})")
    try:
        doc = resp.json()
        ok = (isinstance(doc["changes"], list) and isinstance(doc["more"], bool) and isinstance(doc["epoch"], str)
              and all(is_cursor(doc[k]) for k in ("next", "head")))
    except (ValueError, KeyError, TypeError, RecursionError):
        ok = False
    if not ok:
        raise _Declined("its /_ext/_changes answer is not a change feed")
    return doc


def _remote_changes(client, base_url: str, doc: dict) -> list[dict]:
    """Every entry of the downstream's feed from ``doc`` (its first page) on."""
    out = []
    for _ in range(MAX_PAGES):
        out += [c for c in doc["changes"] if isinstance(c, dict) and isinstance(c.get("namespace"), str)
                and isinstance(c.get("tag"), str)]
        if len(out) > FEED_LIMIT:
            raise _Declined(f"more than {FEED_LIMIT} changes on the downstream since the saved cursor")
        if not doc["more"]:
            return out
        try:
            doc = _fetch(client, base_url, doc["next"], PAGE)
        except CursorExpired:
            raise _Declined("the downstream's change feed was trimmed while it was read") from None
    raise _Declined(f"the downstream's change feed ran past {MAX_PAGES} pages")
