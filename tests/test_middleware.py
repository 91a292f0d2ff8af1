"""The request id and the 500 answer around an app that fails (a stand-in for any bug behind them)."""

from __future__ import annotations

import asyncio

import httpx
from asgi_correlation_id import CorrelationIdMiddleware

from pocket3d.api.middleware import AccessLogMiddleware, valid_request_id


async def failing_app_standing_in_for_a_bug(scope, receive, send) -> None:
    raise RuntimeError("boom")


def _call(headers: dict[str, str]) -> httpx.Response:
    app = CorrelationIdMiddleware(AccessLogMiddleware(failing_app_standing_in_for_a_bug), validator=valid_request_id)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get("/x", headers=headers)

    return asyncio.run(call())


def test_an_unhandled_error_is_a_500_with_the_request_id() -> None:
    r = _call({"X-Request-ID": "abc-1"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "abc-1"
    body = r.json()
    assert body["error_code"] == "INTERNAL_ERROR" and body["request_id"] == "abc-1"
    assert "boom" not in r.text, "no internals leak to the client"


def test_an_unusable_request_id_is_replaced() -> None:
    r = _call({"X-Request-ID": "no spaces\tor tabs allowed"})
    given = r.headers["x-request-id"]
    assert given != "no spaces\tor tabs allowed" and valid_request_id(given)
    assert r.json()["request_id"] == given


def test_access_lines_can_be_turned_off_and_the_metrics_still_count(caplog) -> None:
    async def ok(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    for log_access in (True, False):
        seen: list[tuple] = []
        app = AccessLogMiddleware(ok, observe=lambda *a: seen.append(a), log_access=log_access)

        async def call() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await c.get("/x")

        caplog.clear()
        with caplog.at_level("INFO", logger="pocket3d.access"):
            assert asyncio.run(call()).status_code == 204
        assert len([r for r in caplog.records if r.name == "pocket3d.access"]) == (1 if log_access else 0)
        assert [(m, route, status) for m, route, status, _ in seen] == [("GET", "unmatched", 204)]
