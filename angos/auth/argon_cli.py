"""``angos argon``: read a password and print its argon2id hash for ``[auth.identity.<id>] password``.

On a terminal the password is prompted for without echo, twice, and the two
must match. Otherwise exactly one line is read from stdin (the trailing
newline is not part of the password), so scripts can pipe a secret in:
``printf '%s\\n' "$PW" | angos argon``. The hash goes to stdout alone; an
empty password is refused. No configuration file is read.
"""

from __future__ import annotations

import getpass
import sys

from ..oci.errors import AngosError


def configure_parser(parser) -> None:
    parser.description = ("Read a password (prompted without echo on a terminal, one line from stdin "
                          "otherwise) and print an argon2id hash for [auth.identity.<id>] password.")


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise AngosError("the passwords do not match")
        return first
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def run(args, config_paths) -> int:
    from .basic import hash_password

    password = _read_password()
    if password.endswith("\r"):
        password = password[:-1]
    if not password:
        raise AngosError("empty password; nothing to hash")
    print(hash_password(password))
    return 0
