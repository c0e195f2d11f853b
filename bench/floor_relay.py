"""The least work a verifying cache can do per byte, as a yardstick for the cache benchmark.

``python -m bench.floor_relay PORT``: a TCP relay on 127.0.0.1 in front of
``127.0.0.1:PORT`` that, for every byte the upstream sends back, does what any
pull-through cache must (hash it with sha256, write it to a new file, send it
on) and nothing else: no HTTP parsing, no registry logic, no metadata, no
locks. Each connection's answers go to their own file in a temporary directory
removed on exit. It prints its port on the first line of stdout, then serves
until killed.

Run as its own process (threads for the two directions of each connection,
the GIL released in every system call and in hashing), like a cache beside the
upstream and the client. A cold pull through it, over the direct pull, is the
floor for any cache's ratio on the machine: what is left when the cache's own
logic costs nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading

CHUNK = 256 * 1024


def _pipe(src: socket.socket, dst: socket.socket, store: str | None) -> None:
    fd = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) if store else None
    digest = hashlib.sha256()
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            if fd is not None:
                digest.update(data)
                os.write(fd, data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        if fd is not None:
            os.close(fd)
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # the benchmark stops it with SIGTERM: clean up as on Ctrl-C
    target = int(argv[0])
    workdir = tempfile.mkdtemp(prefix="bench-floor-")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    print(sock.getsockname()[1], flush=True)
    try:
        for n in itertools.count():
            client, _ = sock.accept()
            upstream = socket.create_connection(("127.0.0.1", target))
            threading.Thread(target=_pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, client, os.path.join(workdir, str(n))),
                             daemon=True).start()
    except KeyboardInterrupt:
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
