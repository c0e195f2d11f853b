"""Outbound OCI registry access: :mod:`.client` is the one HTTP client Angos uses to talk to
other registries (replication's downstreams, pull-through's upstreams)."""
