"""Benchmarks for Angos, run with ``python -m bench`` (``make bench``).

Nothing here runs on import. The runnable benchmarks are modules named
``bench/<name>_bench.py``; each exposes ``main(argv: list[str] | None = None)``
(a ``main()`` without parameters is accepted too) and returns or exits with 0
on success. ``python -m bench`` runs ``registry`` (angos against CNCF
Distribution) first and then every other ``*_bench`` module present, or only
the ones named with ``--only NAME``. In ``--quick`` mode the argv handed to
each ``main`` is ``["--quick"]``.

Helpers used by the registry comparison:

- :mod:`bench.servers` starts angos and Distribution on 127.0.0.1 free ports in
  temporary directories and tears them down on exit, Ctrl-C or SIGTERM;
- :mod:`bench.client` is a small non-buffering HTTP client for blob transfers;
- :mod:`bench.data` makes the random blobs and the OCI layout for skopeo;
- :mod:`bench.blobs`, :mod:`bench.manifests`, :mod:`bench.skopeo` measure;
- :mod:`bench.report` takes medians and prints the Markdown table.
"""
