"""Records every argon2 verification a process runs (tests only; never installed).

Python imports ``sitecustomize`` at start-up from ``sys.path``; the tests put
this directory on ``PYTHONPATH`` of the servers they start, with
``ANGOS_TEST_ARGON2_LOG`` naming a file. Each call of
``argon2.PasswordHasher.verify`` then appends ``start <time> <pid> <call>``
before and ``end <time> <pid> <call>`` after it (``call`` pairs the two), so a test can count the
verifications a real server process ran and how many overlapped. The real
verification runs unchanged: this observes, it does not stand in. (It shadows
Debian's own sitecustomize, which only installs apport's crash hook.)
"""

import os

_LOG = os.environ.get("ANGOS_TEST_ARGON2_LOG")

if _LOG:
    import time

    import argon2

    _verify = argon2.PasswordHasher.verify

    def _record(event: str, call: str) -> None:
        line = f"{event} {time.time():.6f} {os.getpid()} {call}\n"
        fd = os.open(_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def verify(self, hash, password):  # noqa: A002 - argon2's own parameter name
        call = os.urandom(6).hex()
        _record("start", call)
        try:
            return _verify(self, hash, password)
        finally:
            _record("end", call)

    argon2.PasswordHasher.verify = verify
