"""Tests that run what the README and docs/*.md tell a reader to run, as written.

Helpers (:mod:`tests.docs.snippets`) take a fenced block out of a document by its
first line or by a line it contains, move the documented ports onto free ones,
and run the shell lines with this checkout's ``angos`` first on ``PATH``.
"""
