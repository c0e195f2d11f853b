"""Replication to downstream registries: URL mapping, the outbound OCI client,
the push/delete pipeline, and (wired in create_app) the event listener and job
handler that ride the durable ``replication`` queue."""
