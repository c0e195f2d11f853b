"""Maintenance behind ``angos scrub``: replication reconcile, orphan clean-up,
consistency repairs and space reclamation. Each phase lives in its own module."""
