"""Outbound OCI registry access: :mod:`.client` is the one HTTP client Angos uses to talk to
other registries (replication's downstreams, pull-through's upstreams); :mod:`.unread` sends any
outbound request (webhooks and OIDC issuers too) without reading its answer behind the caller's back."""
