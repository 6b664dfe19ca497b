"""A local web page for labelling the pairs of a label queue, on the standard library's ``http.server``.

Routes (everything else is 404)::

    GET  /                    the page (static/index.html), which loads static/label.js and static/label.css
    GET  /static/<file>       the page's files
    GET  /clips/<id>_a.gif    a clip of the queue (``_a``: left, ``_b``: right)
    GET  /api/state           progress and the next pair: {"pairs", "labelled", "left", "right", "equal", "skip",
                              "goal", "next": {"pair", "left", "right"} or null}
    POST /api/label           {"pair": id, "key": "left"|"right"|"equal"|"skip"} -> {"ok", "duplicate", "state"}

A label is appended to the queue's ``labels.jsonl`` and fsync'd before the reply is sent (the page shows the next
pair only then), so a label the person saw accepted is on disk. The same pair answered twice (a reloaded page, a
double key press) is refused by the queue and answered with ``duplicate: true``: nothing is written twice. The
server holds the queue's append lock for its life; a second server on the same queue is refused. New pairs that a
training run adds while the page is open appear without a restart (the page polls ``/api/state`` while it waits).
"""

from __future__ import annotations

import json
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from pixelrl.errors import ConfigError
from pixelrl.rewards.queue import KEYS, LabelQueue

__all__ = ["LabelServer", "serve"]

STATIC_FILES = ("index.html", "label.js", "label.css")
MAX_BODY = 4096


def _static(name: str) -> bytes:
    return resources.files("pixelrl.web").joinpath("static", name).read_bytes()


class LabelServer:
    """Serves ``queue`` on ``host:port`` (port 0: any free port; :attr:`url` says which) from a background thread
    (:meth:`start`) or the calling one (:meth:`serve_forever`)."""

    def __init__(self, queue: LabelQueue | str | Path, *, host: str = "127.0.0.1", port: int = 8765,
                 quiet: bool = True) -> None:
        self.queue = queue if isinstance(queue, LabelQueue) else LabelQueue(queue)
        self.queue.writer()  # the append lock: one labelling process per queue
        self._lock = threading.Lock()
        self.quiet = quiet
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                if not server.quiet:
                    super().log_message(fmt, *args)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._get(self)

            def do_POST(self) -> None:  # noqa: N802
                server._post(self)

        try:
            self.httpd = ThreadingHTTPServer((host, int(port)), Handler)
        except OSError as e:
            self.queue.close()
            raise ConfigError(f"cannot serve on {host}:{port} ({e.strerror or e}); choose another --port") from None
        self.httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    # ---- lifecycle
    def start(self) -> "LabelServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="pixelrl-label", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
        self.queue.close()

    # ---- state
    def state(self) -> dict:
        p = self.queue.progress()
        nxt = self.queue.next_unlabelled()
        return {**p, "goal": self.queue.meta.get("goal"), "segment": self.queue.meta.get("segment", 1),
                "next": None if nxt is None else {"pair": nxt, "left": f"/clips/{nxt:06d}_a.gif",
                                                  "right": f"/clips/{nxt:06d}_b.gif"}}

    # ---- requests
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Cache-Control", "no-store")
        h.end_headers()
        h.wfile.write(body)

    def _json(self, h: BaseHTTPRequestHandler, obj: Any, status: int = 200) -> None:
        self._send(h, status, json.dumps(obj).encode(), "application/json")

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        path = urlparse(h.path).path
        if path in ("/", "/index.html"):
            return self._send(h, 200, _static("index.html"), "text/html; charset=utf-8")
        if path.startswith("/static/") and path[len("/static/"):] in STATIC_FILES:
            name = path[len("/static/"):]
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            return self._send(h, 200, _static(name), ctype + ("; charset=utf-8" if ctype.startswith("text") or
                                                                 "javascript" in ctype else ""))
        if path.startswith("/clips/"):
            name = path[len("/clips/"):]
            stem, _, ext = name.partition(".")
            pid, _, side = stem.partition("_")
            if ext == "gif" and pid.isdigit() and side in ("a", "b"):
                f = self.queue.clip_path(int(pid), side)
                if f.is_file():
                    return self._send(h, 200, f.read_bytes(), "image/gif")
            return self._json(h, {"error": f"no clip {name}"}, HTTPStatus.NOT_FOUND)
        if path == "/api/state":
            with self._lock:
                return self._json(h, self.state())
        return self._json(h, {"error": f"no such page {path}"}, HTTPStatus.NOT_FOUND)

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        if urlparse(h.path).path != "/api/label":
            return self._json(h, {"error": "POST only to /api/label"}, HTTPStatus.NOT_FOUND)
        try:
            n = int(h.headers.get("Content-Length", "0"))
            if not 0 < n <= MAX_BODY:
                raise ValueError("bad length")
            body = json.loads(h.rfile.read(n))
            pair, key = int(body["pair"]), str(body["key"])
            if key not in KEYS:
                raise ValueError(f"key {key!r}")
        except (ValueError, KeyError, TypeError) as e:
            return self._json(h, {"error": f"expected {{'pair': id, 'key': one of {list(KEYS)}}} ({e})"},
                              HTTPStatus.BAD_REQUEST)
        extra = {k: body[k] for k in ("ms",) if isinstance(body.get(k), (int, float))}
        with self._lock:
            try:
                written = self.queue.append_label(pair, key, **extra)
            except ConfigError as e:
                return self._json(h, {"error": str(e)}, HTTPStatus.BAD_REQUEST)
            return self._json(h, {"ok": True, "duplicate": not written, "state": self.state()})


def serve(queue: str | Path, *, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until Ctrl-C (``pixelrl label``)."""
    server = LabelServer(queue, host=host, port=port, quiet=True)
    p = server.queue.progress()
    print(f"labelling {server.queue.path}: {p['labelled']}/{p['pairs']} pairs labelled; open {server.url} "
          "(keys: left arrow / right arrow = that clip is better, down arrow = equal, space = skip; Ctrl-C stops, "
          "every label is already on disk)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        p = server.queue.progress()
        print(f"stopped: {p['labelled']}/{p['pairs']} pairs labelled in {server.queue.path}", flush=True)
