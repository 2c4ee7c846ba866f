"""A loopback TCP proxy that cuts connections part-way: a home uplink that drops, for tests and
benchmarks. Point the S3 client at ``proxy.endpoint``; every ``drop_every``-th connection is reset
(RST, not a clean close) after ``drop_after`` bytes went upstream."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class DroppingProxy:
    def __init__(self, upstream: tuple[str, int], drop_every: int = 3, drop_after: int = 1 << 20) -> None:
        self.upstream = upstream
        self.drop_every = drop_every
        self.drop_after = drop_after
        self.connections = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="dropping-proxy")

    def start(self) -> DroppingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._srv.close()

    def __enter__(self) -> DroppingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                doomed = self.drop_every > 0 and self.connections % self.drop_every == 0
            try:
                up = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, up, doomed), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, False), daemon=True).start()

    def _reset(self, *socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

    def _pump(self, src: socket.socket, dst: socket.socket, doomed: bool) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if doomed and sent + len(data) >= self.drop_after:
                    with self._lock:
                        self.dropped += 1
                    self._reset(src, dst)
                    return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
