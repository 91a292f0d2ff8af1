"""A webhook receiver on loopback for the tests: a real HTTP server in a thread that records every request and
answers as the test scripts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


# (status, headers, body) for a request; the default answers 200 with no body.
Answer = tuple[int, dict[str, str], bytes]


class Receiver:
    def __init__(self, statuses: list[int] | None = None, respond: Callable[[Received, int], Answer] | None = None,
                 hold_first: bool = False):
        """``statuses``: the status of the 1st, 2nd, ... request (then 200); ``respond(request, n)`` decides
        instead; ``hold_first``: the first request waits, unanswered, until :meth:`release`."""
        self.statuses = list(statuses or [])
        self.respond = respond
        self.requests: list[Received] = []
        self._cond = threading.Condition()
        self._hold = threading.Event() if hold_first else None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                got = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                               self.rfile.read(length) if length else b"")
                with receiver._cond:
                    receiver.requests.append(got)
                    n = len(receiver.requests)
                    receiver._cond.notify_all()
                if n == 1 and receiver._hold is not None:
                    receiver._hold.wait(60)
                status, headers, body = receiver._answer(got, n)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the sender is gone (a test killed it)
                    pass

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, got: Received, n: int) -> Answer:
        if self.respond is not None:
            return self.respond(got, n)
        status = self.statuses[n - 1] if n <= len(self.statuses) else 200
        return status, {}, b""

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def release(self) -> None:
        if self._hold is not None:
            self._hold.set()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.requests)} of {count} requests arrived in {timeout} s"
                self._cond.wait(left)
            return list(self.requests)


class StubResolverForTests:
    """TEST DOUBLE for DNS, which cannot answer here for made-up names (and must not be asked for real ones):
    each name resolves to the addresses a test gives it, answer after answer (the last one repeats), so a test
    can make a name change its answer between the check at submit and the delivery (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[list[str]]]):
        import ipaddress

        self._answers = {name: [[ipaddress.ip_address(a) for a in answer] for answer in seq]
                         for name, seq in answers.items()}
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int):  # noqa: ANN201 - list of ipaddress objects
        from pocket3d.outbound.guard import Unresolvable

        with self._lock:
            self.asked.append(host)
            seq = self._answers.get(host)
            if not seq:
                raise Unresolvable(f"{host} does not resolve (test resolver)")
            return seq.pop(0) if len(seq) > 1 else seq[0]
