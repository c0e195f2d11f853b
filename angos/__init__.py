"""Angos: an OCI Distribution registry with active-active replication.

Importing the package runs nothing; entry points are ``angos.cli:main``,
``angos.api.create_app`` and ``angos.queue.make_huey``.
"""

__version__ = "0.1.0"
