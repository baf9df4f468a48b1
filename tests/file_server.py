"""A real HTTP server on 127.0.0.1 for download tests: serves files, or breaks them on purpose.

``FileServer(folder)`` serves the files of ``folder`` at ``/<name>`` on a free port, in a thread.  Per file name,
``damage[name] = "corrupt"`` serves its bytes with one byte flipped, ``"cut"`` announces the full length and
closes the connection halfway.  ``requests`` lists the paths asked for, in order.
"""
from __future__ import annotations

import http.server
import threading
from pathlib import Path


class FileServer:
    def __init__(self, folder: Path):
        self.folder, self.damage, self.requests = Path(folder), {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                server.requests.append(self.path)
                file = server.folder / self.path.lstrip("/").split("?")[0]
                if not file.is_file():
                    self.send_error(404)
                    return
                body, how = file.read_bytes(), server.damage.get(file.name)
                if how == "corrupt":
                    body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if how == "cut" else body)
                if how == "cut":
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: a connection to it is refused, as offline."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
