"""JSON-RPC over HTTP(S) with one keep-alive ``http.client`` connection per thread.

Measured on anvil (2-core VM): web3's ``HTTPProvider`` (``requests`` underneath)
spends ~0.6 ms of CPU per call, a plain ``http.client`` connection ~0.1 ms. A
job takes a dozen calls on each side, and the node's threads share one GIL, so
this is throughput (docs/benchmarks.md, "End to end").

:class:`HttpTransport` only moves bytes: :class:`TransportError` means the call
may not have reached the node (connection refused or reset, timeout, HTTP 5xx or
429: worth retrying); :class:`BadAnswer` means the node answered something that
is not a JSON document of bounded size. Interpreting the JSON is the caller's job.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from protocol import boundedjson

__all__ = ["MAX_ANSWER_BYTES", "BadAnswer", "HttpTransport", "TransportError"]

#: Largest JSON-RPC answer read (eth_getLogs of a wide range is the big one).
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class TransportError(Exception):
    """The request may not have been processed: retry it."""


class BadAnswer(Exception):
    """The node answered, but not with a bounded JSON document."""


class HttpTransport:
    """POSTs JSON-RPC requests to one URL; thread-safe (a connection per thread)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if parts.username is not None:
            user_pass = f"{urllib.parse.unquote(parts.username)}:"
            user_pass += urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(user_pass.encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._ids = itertools.count(1)
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _body(self, method: str, params: list[Any]) -> bytes:
        return json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        ).encode()

    def _send(self, body: bytes) -> tuple[http.client.HTTPConnection, bool]:
        """Write one request on this thread's connection; the connection and whether it
        was kept alive from an earlier request. A kept-alive connection the node has
        closed fails at once: the request goes once more on a fresh one."""
        for attempt in (1, 2):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=body, headers=self._headers)
                return conn, reused
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if attempt == 1 and reused and not isinstance(exc, TimeoutError):
                    continue
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def call(self, method: str, params: list[Any]) -> Any:
        """One request; the decoded JSON answer (any JSON value)."""
        body = self._body(method, params)
        for attempt in (1, 2):
            conn, reused = self._send(body)
            try:
                response = conn.getresponse()
                data = response.read(MAX_ANSWER_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                # a closed kept-alive connection may only show when its answer is read
                if attempt == 1 and reused and not isinstance(exc, TimeoutError):
                    continue
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            return self._decode(response, data)
        raise AssertionError("unreachable")

    def start(self, method: str, params: list[Any]) -> Callable[[], Any]:
        """Send one request now; the returned function reads its answer (call it once,
        from this thread: the connection is this thread's).

        For a call that waits at the node (``eth_sendRawTransactionSync`` until the
        transaction is mined) whose sending must happen under a lock that the wait
        must not hold. A failure to send raises :class:`TransportError` here; a
        failure to read raises it from the function, and then the node may or may
        not have processed the request.
        """
        conn, _ = self._send(self._body(method, params))

        def finish() -> Any:
            try:
                response = conn.getresponse()
                data = response.read(MAX_ANSWER_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            return self._decode(response, data)

        return finish

    def _decode(self, response: http.client.HTTPResponse, data: bytes) -> Any:
        if len(data) > MAX_ANSWER_BYTES:
            self._drop()
            raise BadAnswer(f"answer over {MAX_ANSWER_BYTES} bytes")
        if response.will_close:
            self._drop()
        status = response.status
        if status >= 500 or status == 429:
            raise TransportError(f"HTTP {status} {response.reason}")
        try:
            return boundedjson.loads(data)
        except ValueError:
            raise BadAnswer(f"HTTP {status}, not JSON: {data[:80]!r}") from None
