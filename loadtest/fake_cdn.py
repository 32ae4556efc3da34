"""A stand-in CDN edge on a loopback port: answers health checks (`200 OK`, or the bytes it
is given), can be stopped, started again on the same port, or made to hang (accept and never
answer)."""

import socket
import socketserver
import threading

from loadtest.support import free_port

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FakeCdn:
    def __init__(self, port: int | None = None, *, hang: bool = False, answer: bytes = _OK) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.base_url = f"http://{self.host}"
        self.hang = hang
        self.answer = answer
        self.hits = 0
        self._server: socketserver.ThreadingTCPServer | None = None
        self._released = threading.Event()

    def start(self) -> "FakeCdn":
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.rfile.readline()
                fake.hits += 1
                if fake.hang:
                    fake._released.wait()
                    return
                self.wfile.write(fake.answer)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._released.clear()
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listening socket: new connections are refused from now on."""
        server, self._server = self._server, None
        if server is not None:
            self._released.set()
            server.shutdown()
            server.server_close()

    @property
    def running(self) -> bool:
        return self._server is not None

    def refuses(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return False
        except OSError:
            return True
