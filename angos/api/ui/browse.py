"""Browsing what is stored.

- ``GET /_ui/`` (``list-repositories``): every namespace that holds content (the catalog), each
  under its configured repository (``section.group[data-repository=<key>]``) or under
  "unconfigured" (``data-repository=""``), only those the visitor may ``list-revisions``;
  ``q`` keeps names containing it, ``n``/``last`` page through them (:data:`PAGE` by default,
  ordered by group then name). Tag and manifest counts are read for the rows shown only.
- ``GET /_ui/repositories/<repository>`` (``list-namespaces``): the same view for one repository.
- ``GET /_ui/namespaces/<namespace>`` (``list-revisions``): the namespace page. Tags first
  (``table#tags``, paged by tag name with ``n``/``last``, filtered by ``q``), each with its
  digest, platforms, total size, push and pull times, referrer badges and, for an index, its
  children; then the untagged manifests (``table#untagged``) when every tag fits on the page,
  else a link to ``?view=untagged`` (their own paged listing, ``after`` a digest). Only the
  page's tags are read (:mod:`angos.registry.image_views`), so a namespace of 10,000 tags costs
  what one of 100 does.

Links and buttons appear only when :func:`~angos.api.gate.can` allows their action.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from flask import current_app, request, url_for
from markupsafe import Markup, escape

from ...digits import count
from ...oci.digest import is_digest
from ...oci.errors import NameUnknown
from ...oci.reference import is_valid_tag, validate_name
from ...registry.image_views import ImageViews
from ...registry.tags import immutable
from ...replication.status import downstream_names
from ..gate import action, can
from ..http import registry
from . import bp
from .common import home_crumb, page

PAGE = 100
MAX_PAGE = 1000

# What a redirect back after a delete may announce: fixed texts around a validated reference.
NOTICES = {"tag-deleted": "Tag {ref} deleted.", "manifest-deleted": "Manifest {ref} deleted."}


@bp.app_template_filter("breakable")
def breakable(text: str) -> Markup:
    """``text`` escaped, with a line-break opportunity (``<wbr>``) after each ``.`` and ``/``: a long
    media type in a narrow badge wraps at its parts, not in the middle of one. The tags are added
    after escaping, to text that can then hold no markup of its own."""
    return Markup(str(escape(text)).replace(".", ".<wbr>").replace("/", "/<wbr>"))


def shown_url(url: str) -> str:
    """An upstream's URL as a page may show it: without any ``user:password@``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])) if "@" in parts.netloc else url


def page_size() -> int:
    n = count(request.args.get("n"))
    return max(1, min(n, MAX_PAGE)) if n is not None else PAGE


def _cfg():
    return current_app.extensions["angos.config"]


def namespace_crumbs(namespace: str, here: bool = True) -> list[tuple[str, str | None]]:
    """Repositories › repository › namespace (the last a link unless it is this page)."""
    crumbs = [home_crumb()]
    repository = _cfg().repository_for(namespace)[0]
    if repository is not None:
        crumbs.append((repository, url_for("ui.browse_namespaces", repository=repository)))
    crumbs.append((namespace, None if here else url_for("ui.browse_revisions", namespace=namespace)))
    return crumbs


def _groups(repository: str | None):
    cfg, reg = _cfg(), registry()
    keys = sorted(cfg.repository)
    order = {k: i for i, k in enumerate(keys)}

    def sort_key(ns: str) -> tuple[int, str]:
        return order.get(cfg.repository_for(ns)[0], len(keys)), ns

    q = request.args.get("q", "").strip()
    names = [ns for ns in reg.catalog.namespaces()
             if (repository is None or cfg.repository_for(ns)[0] == repository) and (not q or q.lower() in ns.lower())]
    visible = sorted((ns for ns in names if can("list-revisions", namespace=ns)), key=sort_key)
    last = request.args.get("last")
    if last:
        visible = [ns for ns in visible if sort_key(ns) > sort_key(last)]
    n = page_size()
    shown = visible[:n]
    groups: dict[str, dict] = {}
    for ns in shown:
        key = cfg.repository_for(ns)[0]
        group = groups.get(key or "")
        if group is None:
            repo = cfg.repository.get(key) if key else None
            group = groups[key or ""] = {
                "key": key or "", "label": key or "unconfigured", "rows": [],
                "pull_through": bool(repo is not None and repo.upstream),
                "immutable": bool(repo is not None and (cfg.global_.immutable_tags or repo.immutable_tags)),
                "url": url_for("ui.browse_namespaces", repository=key) if key else None}
        group["rows"].append({"name": ns, "tags": len(reg.manifests.tags.names(ns)),
                              "manifests": len(reg.manifests.list_revisions(ns))})
    return list(groups.values()), q, (shown[-1] if len(visible) > n else None), n


@bp.route("/", methods=["GET"])
@action("list-repositories")
def browse_repositories():
    groups, q, nxt, n = _groups(None)
    return page("home.html", "Repositories", section="repositories", groups=groups, q=q, next=nxt, n=n,
                repository=None)


@bp.route("/repositories/<path:repository>", methods=["GET"])
@action("list-namespaces")
def browse_namespaces(repository: str):
    validate_name(repository)
    if repository not in _cfg().repository:
        raise NameUnknown(f"repository {repository} is not configured")
    groups, q, nxt, n = _groups(repository)
    return page("home.html", f"Namespaces of {repository}", [home_crumb(), (repository, None)],
                section="repositories", groups=groups, q=q, next=nxt, n=n, repository=repository)


def _notice() -> str | None:
    text, ref = NOTICES.get(request.args.get("done", "")), request.args.get("ref", "")
    if text is None:
        return None
    return text.format(ref=ref) if is_valid_tag(ref) or is_digest(ref) else None


def namespace_url(namespace: str) -> str:
    """The namespace page's URL; a manifest's page is ``<it>/manifests/<digest>`` (built by hand:
    one ``url_for`` per page instead of several per row)."""
    return url_for("ui.browse_revisions", namespace=namespace)


def decorate(namespace: str, rows: list[dict], tagged: bool) -> None:
    """Add what the visitor may do with each row, as URLs: ``url`` (its manifest page, when
    ``get-manifest`` is allowed), ``delete_url`` (when ``delete-manifest`` is, never for an
    immutable tag: ``immutable``), and ``url`` on its children and referrers."""
    policy = registry().write_policy(namespace)
    base = namespace_url(namespace)
    for row in rows:
        d = row["digest"]
        may_view = can("get-manifest", namespace=namespace, reference=d, digest=d)
        row["url"] = f"{base}/manifests/{d}" if may_view else None
        if tagged:
            row["immutable"] = immutable(row["tag"], policy.immutable_tags, policy.immutable_exclusions)
            may_delete = not row["immutable"] and can("delete-manifest", namespace=namespace, reference=row["tag"])
            row["delete_url"] = f"{base}/tags/{row['tag']}/delete" if may_delete else None
        else:
            may_delete = can("delete-manifest", namespace=namespace, reference=d, digest=d)
            row["delete_url"] = f"{base}/manifests/{d}/delete" if may_delete else None
        for linked in (*row["children"], *row["referrers"]):
            linked["url"] = f"{base}/manifests/{linked['digest']}" if may_view and linked.get("stored", True) else None


@bp.route("/namespaces/<path:namespace>", methods=["GET"])
@action("list-revisions")
def browse_revisions(namespace: str):
    validate_name(namespace)
    reg = registry()
    views = ImageViews(reg)
    n = page_size()
    q = request.args.get("q", "").strip()
    untagged_view = request.args.get("view") == "untagged"
    all_names = views.tag_names(namespace, q)
    exists = bool(all_names) or reg.manifests.namespace_exists(namespace)
    rows, nxt, untagged, untagged_next, untagged_link = [], None, None, None, False
    if exists and untagged_view:
        untagged, untagged_next = views.untagged(namespace, views.tagged_digests(namespace),
                                                 request.args.get("after") or None, n)
    elif exists:
        last = request.args.get("last") or ""
        names = [t for t in all_names if t > last] if last else all_names
        rows = views.tag_rows(namespace, names[:n])
        nxt = names[n - 1] if len(names) > n else None
        if not q and not last and len(all_names) <= n:  # every tag is on this page: we know them all
            untagged, untagged_next = views.untagged(namespace, {r["digest"] for r in rows}, None, n)
        else:
            untagged_link = True
    decorate(namespace, rows, tagged=True)
    decorate(namespace, untagged or [], tagged=False)
    pull = None
    if rows:
        first = next((r for r in rows if r["tag"] == "latest"), rows[0])
        pull = f"{request.host}/{namespace}:{first['tag']}"
    elif untagged:
        pull = f"{request.host}/{namespace}@{untagged[0]['digest']}"
    cfg = _cfg()
    repo = cfg.repository_for(namespace)[1]
    links = {
        "replication": (url_for("ui.replication_namespace", namespace=namespace)
                        if downstream_names(cfg, namespace) and can("get-replication-status", namespace=namespace)
                        else None),
        "uploads": (url_for("ui.namespace_uploads", namespace=namespace)
                    if "ui.namespace_uploads" in current_app.view_functions
                    and can("list-uploads", namespace=namespace) else None),
    }
    # A namespace that holds nothing is "not found", like NAME_UNKNOWN on /v2/. Not so a pull-through
    # one (it is there to be pulled through), nor the page reporting that its last manifest was deleted.
    notice = _notice()
    status = 200 if exists or notice or (repo is not None and repo.upstream) else 404
    return page("namespace.html", namespace, namespace_crumbs(namespace), section="repositories", status=status,
                namespace=namespace, exists=exists, rows=rows, next=nxt, n=n, q=q, untagged=untagged,
                untagged_view=untagged_view, untagged_next=untagged_next, untagged_link=untagged_link,
                tag_count=len(all_names), pull=pull, pulls_recorded=cfg.global_.update_pull_time, links=links,
                notice=notice, upstreams=[shown_url(up.url) for up in repo.upstream] if repo is not None else [])
