"""Deleting a tag or a manifest from the UI, always in two steps.

- ``GET /_ui/namespaces/<ns>/tags/<tag>/delete`` and ``GET .../manifests/<digest>/delete``
  (``get-manifest``: looking at what would go) explain what the delete removes and hold a
  ``<form method="post">`` to confirm. When the visitor may not delete it (the policy's
  ``delete-manifest`` for that reference) or an immutable tag is involved, the page says why
  instead, with status 403 or 409, and holds no form.
- ``POST`` to the same paths (``delete-manifest``, the API's action, asked by the gate before
  the view runs) deletes through :meth:`~angos.registry.manifests.ManifestService.delete`, as
  ``DELETE /v2/<ns>/manifests/<reference>`` does (events, tombstones, webhooks), then answers
  303 to the namespace page with a fixed notice. Cross-site posts never get here
  (:mod:`angos.api.origin`).

Immutable tags: the API lets ``delete-manifest`` remove one (its tombstone still keeps the name
from being re-pointed); the UI does not offer it, so a click cannot make a release tag vanish.
A manifest that an immutable tag points at is refused the same way, since deleting it deletes
its tags.
"""

from __future__ import annotations

from flask import redirect, url_for

from ...oci.digest import Digest
from ...oci.errors import ManifestUnknown
from ...oci.reference import validate_name, validate_tag
from ...registry.image_views import ImageViews
from ...registry.tags import immutable
from ...replication.status import downstream_names
from ..actors import current_actor
from ..gate import action, can
from ..http import registry
from . import bp
from .browse import namespace_crumbs
from .common import page


def _immutable(namespace: str, tags: list[str]) -> list[str]:
    policy = registry().write_policy(namespace)
    return [t for t in tags if immutable(t, policy.immutable_tags, policy.immutable_exclusions)]


def _digest(reference: str) -> str:
    try:
        return str(Digest.parse(reference))
    except Exception:  # noqa: BLE001 - any malformed digest is simply not a manifest here
        raise ManifestUnknown(f"{reference[:80]!r} is not a digest") from None


def _tag_plan(namespace: str, tag: str) -> dict:
    rec = registry().manifests.tags.get(namespace, tag)
    if rec is None:
        raise ManifestUnknown(f"tag {namespace}:{tag} unknown")
    refusal = None
    if _immutable(namespace, [tag]):
        refusal = (409, f"The tag {tag} is immutable: it cannot be deleted from the web UI.")
    elif not can("delete-manifest", namespace=namespace, reference=tag):
        refusal = (403, f"The access policy does not let you delete tags in {namespace}.")
    return {"kind": "tag", "reference": tag, "digest": rec.digest, "refusal": refusal}


def _manifest_plan(namespace: str, digest: str) -> dict:
    doc = ImageViews(registry()).details(namespace, digest)
    if doc is None:
        raise ManifestUnknown(f"manifest {namespace}@{digest} unknown")
    refusal = None
    locked = _immutable(namespace, doc["tags"])
    if locked:
        refusal = (409, f"The immutable tag{'s' if len(locked) > 1 else ''} {', '.join(locked)} "
                        f"point{'' if len(locked) > 1 else 's'} at this manifest: "
                        "it cannot be deleted from the web UI.")
    elif not can("delete-manifest", namespace=namespace, reference=digest, digest=digest):
        refusal = (403, f"The access policy does not let you delete manifests in {namespace}.")
    return {"kind": "manifest", "reference": digest, "digest": digest, "refusal": refusal, "doc": doc}


def _confirm(namespace: str, plan: dict):
    status = plan["refusal"][0] if plan["refusal"] else 200
    what = f"tag {plan['reference']}" if plan["kind"] == "tag" else f"manifest {plan['digest'].split(':', 1)[-1][:12]}"
    crumbs = namespace_crumbs(namespace, here=False) + [(f"Delete {what}", None)]
    downstreams = downstream_names(registry().cfg, namespace)
    return page("confirm.html", f"Delete {what}?" if status == 200 else f"Cannot delete {what}", crumbs,
                section="repositories", status=status, namespace=namespace, plan=plan, downstreams=downstreams)


def _done(namespace: str, done: str, reference: str):
    return redirect(url_for("ui.browse_revisions", namespace=namespace, done=done, ref=reference), code=303)


@bp.route("/namespaces/<path:namespace>/tags/<reference>/delete", methods=["GET"])
@action("get-manifest")
def confirm_tag_delete(namespace: str, reference: str):
    validate_name(namespace)
    validate_tag(reference)
    return _confirm(namespace, _tag_plan(namespace, reference))


@bp.route("/namespaces/<path:namespace>/tags/<reference>/delete", methods=["POST"])
@action("delete-manifest")
def delete_tag(namespace: str, reference: str):
    validate_name(namespace)
    validate_tag(reference)
    plan = _tag_plan(namespace, reference)
    if plan["refusal"]:
        return _confirm(namespace, plan)
    registry().manifests.delete(namespace, reference, actor=current_actor())
    return _done(namespace, "tag-deleted", reference)


@bp.route("/namespaces/<path:namespace>/manifests/<reference>/delete", methods=["GET"])
@action("get-manifest")
def confirm_manifest_delete(namespace: str, reference: str):
    validate_name(namespace)
    return _confirm(namespace, _manifest_plan(namespace, _digest(reference)))


@bp.route("/namespaces/<path:namespace>/manifests/<reference>/delete", methods=["POST"])
@action("delete-manifest")
def delete_manifest(namespace: str, reference: str):
    validate_name(namespace)
    digest = _digest(reference)
    plan = _manifest_plan(namespace, digest)
    if plan["refusal"]:
        return _confirm(namespace, plan)
    registry().manifests.delete(namespace, digest, actor=current_actor())
    return _done(namespace, "manifest-deleted", digest)
