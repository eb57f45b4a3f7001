"""A stand-in for the backend's registration endpoint, run as a container of the compose tests.

``POST /api/internal/runtime/register`` records the JSON body (and the Authorization header);
``GET /registrations`` answers every record so far as a JSON list. Standard library only.

    python backend_stub.py PORT
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REGISTER_PATH = "/api/internal/runtime/register"
RECORDS: list[dict[str, object]] = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != REGISTER_PATH:
            self._answer(404, {"error": f"no route {self.path}"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            declaration = json.loads(body)
        except ValueError:
            self._answer(400, {"error": "the body is not JSON"})
            return
        with LOCK:
            RECORDS.append({"authorization": self.headers.get("Authorization"), "declaration": declaration})
        self._answer(200, {"accepted": True})

    def do_GET(self) -> None:
        if self.path != "/registrations":
            self._answer(404, {"error": f"no route {self.path}"})
            return
        with LOCK:
            self._answer(200, list(RECORDS))

    def _answer(self, status: int, document: object) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"backend stub on :{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
