"""A real local HTTP receiver for the webhook tests: records every request, and can be told to answer
with an error, to hang, or to close the connection without answering."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


class Receiver:
    def __init__(self):
        self.received: list[dict] = []
        self.mode = "ok"  # ok | fail | hang | close
        self.fail_status = 503
        self.fail_first: dict[str, int] = {}  # event id -> how many attempts to refuse first
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event_id = self.headers.get("Hub-Event-Id", "")
                with receiver._lock:
                    receiver.received.append({"headers": dict(self.headers), "body": body,
                                              "json": orjson.loads(body), "at": time.monotonic()})
                    refuse = receiver.fail_first.get(event_id, 0)
                    if refuse:
                        receiver.fail_first[event_id] = refuse - 1
                mode = "fail" if refuse else receiver.mode
                if mode == "hang":
                    time.sleep(5)
                if mode == "close":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(receiver.fail_status if mode == "fail" else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def event_ids(self) -> list[str]:
        with self._lock:
            return [r["headers"]["Hub-Event-Id"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
