"""A bandwidth-limiting TCP proxy on 127.0.0.1, to keep transfers in flight long
enough for tests to interrupt them (a loopback transfer is otherwise instant)."""

from __future__ import annotations

import socket
import threading
import time


class SlowProxy:
    def __init__(self, target_port: int, bytes_per_sec: int):
        self.target_port = target_port
        self.rate = bytes_per_sec
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()

    def start(self) -> "SlowProxy":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, throttle: bool) -> None:
        block = 64 * 1024
        try:
            while not self._stop.is_set():
                data = src.recv(block)
                if not data:
                    break
                dst.sendall(data)
                if throttle:
                    time.sleep(len(data) / self.rate)  # the bandwidth limit this proxy emulates
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
