"""TEST-ONLY: an HTTP proxy on loopback that loses what a bad network loses, between a real client and a real
server: it swallows a response (the request reached the server, the answer never comes back), cuts a response
after some events or bytes, or answers in the server's place (a 503 with Retry-After, as a busy gateway would).

Each request gets its own upstream connection with ``Connection: close``, so the server closes it after the
response and the client never reuses it: every request the client makes passes through the rules on its own.
Request bodies must carry Content-Length (httpx sends one for JSON and multipart bodies).
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass, field

from server import free_port


@dataclass
class Rule:
    method: str
    path: str  # a regular expression searched for in the request target
    action: str  # drop | cut_events | cut_bytes | respond
    amount: int = 0  # events or bytes forwarded before the cut
    times: int = 1  # how many matching requests it applies to
    response: bytes = b""  # for respond


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    action: str | None


@dataclass
class FaultProxy:
    upstream_port: int
    prefix: str = ""  # served under this path prefix, stripped before forwarding (a reverse proxy's mount point)
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.call_soon(self._loop.stop)

    def add(self, method: str, path: str, action: str, amount: int = 0, times: int = 1,
            response: bytes = b"") -> None:
        self.rules.append(Rule(method, path, action, amount, times, response))

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and re.search(path, s.target)]

    # -- the proxy ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    def _match(self, method: str, target: str) -> Rule | None:
        for rule in self.rules:
            if rule.times > 0 and rule.method == method and re.search(rule.path, target):
                rule.times -= 1
                return rule
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        assert "chunked" not in headers.get("transfer-encoding", ""), "the proxy needs Content-Length bodies"
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        rule = self._match(method, target)
        self.seen.append(Seen(method, target, headers, rule.action if rule else None))
        if rule is not None and rule.action == "respond":
            writer.write(rule.response)
            await writer.drain()
            writer.close()
            return
        if not target.startswith(self.prefix):
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        request_line = f"{method} {target[len(self.prefix):]} {request_line.split(' ', 2)[2]}"
        kept = [line for line in lines if not line.lower().startswith("connection:")]
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        upstream_w.write("\r\n".join([request_line, *kept, "Connection: close", "", ""]).encode("latin-1") + body)
        await upstream_w.drain()
        sent_bytes = sent_events = 0
        try:
            while chunk := await upstream_r.read(65536):
                if rule is not None and rule.action == "drop":
                    continue  # the server answered; the client will never know
                if rule is not None and rule.action == "cut_bytes":
                    chunk = chunk[:max(0, rule.amount - sent_bytes)]
                writer.write(chunk)
                await writer.drain()
                sent_bytes += len(chunk)
                sent_events += chunk.count(b"\nevent:") + chunk.startswith(b"event:")
                if rule is not None and ((rule.action == "cut_events" and sent_events >= rule.amount)
                                         or (rule.action == "cut_bytes" and sent_bytes >= rule.amount)):
                    break
        except ConnectionError:
            pass
        finally:
            upstream_w.close()
        if rule is not None:
            writer.transport.abort()  # a reset, not a clean end: what a dead link or a killed proxy leaves
        else:
            writer.close()
