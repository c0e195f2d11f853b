"""The web UI (``[ui] enabled = true``): browse what is stored, and the admin pages.

Server-rendered HTML and plain forms, so every page works in any browser without
JavaScript (``static/ui.js`` only saves a reload here and there), behind the same
access policy as the API: each page and button is one of the API's actions.

One blueprint, ``ui`` at ``/_ui``, whose routes live in one module per area:

- :mod:`.browse`: repositories → namespaces → tags and untagged manifests;
- :mod:`.manifest`: one manifest's details; :mod:`.deletes`: tag and manifest deletes (confirm, then POST);
- :mod:`.replication`: every downstream's state and a namespace's tags × downstreams;
- :mod:`.jobs`: pending, running and failed jobs, with retry and delete;
- :mod:`.uploads`: a namespace's upload sessions, with cancel;
- :mod:`.assets`: the stylesheet and script, the theme choice, ``/_ui/config``.

Every page extends ``templates/base.html`` (header, navigation, breadcrumbs, theme)
through :func:`.common.page`; :mod:`.cells` shapes long errors and wire times for
table cells. An error on a UI page is an HTML page too (:mod:`.errors`: "Sign in
required" with the challenge for an anonymous visitor the policy refuses). A browser sends stored Basic credentials with any
request to this host, including a form another site submits:
:mod:`angos.api.origin` refuses a POST that says it comes from another site, or that
carries neither ``Sec-Fetch-Site`` nor ``Origin``, with 403 before it acts.
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("ui", __name__, url_prefix="/_ui", template_folder="templates")

from . import (assets, browse, cells, common, deletes, errors, jobs, manifest,  # noqa: E402 - each registers its routes on bp
               replication, uploads)

AREAS = (assets, browse, cells, common, deletes, errors, jobs, manifest, replication, uploads)
