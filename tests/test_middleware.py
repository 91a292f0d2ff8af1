"""The request-id middleware on its own, around an app that fails (a stand-in for any bug behind it)."""

from __future__ import annotations

import asyncio

import httpx

from pocket3d.api.middleware import RequestIdMiddleware


async def failing_app_standing_in_for_a_bug(scope, receive, send) -> None:
    raise RuntimeError("boom")


def test_an_unhandled_error_is_a_500_with_the_request_id() -> None:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=RequestIdMiddleware(failing_app_standing_in_for_a_bug))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get("/x", headers={"X-Request-ID": "abc-1"})

    r = asyncio.run(call())
    assert r.status_code == 500 and r.headers["x-request-id"] == "abc-1"
    body = r.json()
    assert body["error_code"] == "INTERNAL_ERROR" and body["request_id"] == "abc-1"
    assert "boom" not in r.text, "no internals leak to the client"
