"""Webhook delivery from the outbox: at least once, signed by the Standard Webhooks scheme.

The sender is one thread of its own (plus a small pool for the requests in flight): it claims due deliveries
from the job store under a lease, signs each with the ``standardwebhooks`` package, posts it through the
:class:`OutboundClient` (the address guard on every hop), and records the attempt. A non-2xx answer, a timeout
or a refused address is retried with exponential backoff and jitter until ``webhooks.retry_for`` has passed since
the event; then the delivery is marked failed. Nothing here runs on the scheduler's threads, so a slow receiver
never holds a job up. Every attempt of one message carries the same ``webhook-id``, so receivers drop repeats.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook
from structlog.contextvars import bound_contextvars

from pocket3d.config import WebhookSettings
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import outbox
from pocket3d.jobs.records import ClaimedDelivery, Delivery, DeliveryStatus
from pocket3d.jobs.store import Store
from pocket3d.outbound.client import OutboundClient
from pocket3d.outbound.guard import AddressGuard, ForbiddenTarget, OutboundError

log = logging.getLogger(__name__)

IDLE_POLL = 5.0  # seconds between looks at the outbox when nothing wakes the sender
EXCERPT = 200  # characters of a receiver's answer kept with a failed attempt


def check_webhook_url(guard: AddressGuard, url: str) -> str:
    """Refuse, at submit or registration, a URL no delivery could go to."""
    try:
        guard.check(url)
    except ForbiddenTarget as e:
        raise Pocket3DError(ErrorCode.WEBHOOK_URL_FORBIDDEN, f"webhook_url: {e}",
                            {"host": e.host, "address": str(e.address), "reason": e.reason},
                            hint="give a URL that is reachable from the internet; for a receiver inside your network, "
                                 "the operator lists its host in webhooks.allow_hosts") from None
    except OutboundError as e:
        raise Pocket3DError(ErrorCode.WEBHOOK_URL_INVALID, f"webhook_url: {e}",
                            hint="an http:// or https:// URL whose host resolves, without a user name or "
                                 "password") from None
    return url


class WebhookSender:
    def __init__(self, store: Store, settings: WebhookSettings, guard: AddressGuard, *,
                 on_attempt: Callable[[str], None] | None = None,
                 on_outcome: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time):
        self.store, self.settings, self.guard, self.clock = store, settings, guard, clock
        self.client = OutboundClient(guard, timeout=settings.timeout,
                                     max_response_size=int(settings.max_response_size),
                                     max_redirects=settings.max_redirects)
        self._on_attempt = on_attempt or (lambda kind: None)
        self._on_outcome = on_outcome or (lambda status: None)
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="webhook")
        self._in_flight = 0
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # A claim outlives any attempt; it runs out only when the process died mid-attempt.
        self._lease = settings.timeout * 2 + 30
        store.add_outbox_listener(self.wake)

    def check_url(self, url: str) -> str:
        return check_webhook_url(self.guard, url)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self, *, only_sender: bool) -> None:
        """``only_sender``: no other process sends from this store (the embedded node), so what was in flight
        when the last one died is due again at once rather than when its lease runs out."""
        if only_sender:
            n = outbox.release_all_sending(self.store, now=self.clock())
            if n:
                log.warning("%d webhook delivery(ies) were in flight when the last process stopped; sending again", n)
        self._thread = threading.Thread(target=self._loop, name="webhook-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
        # Attempts in flight finish within webhooks.timeout; one cut short is sent again after a restart.
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        self._wakeup.set()

    # -- the loop -------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wakeup.clear()
            wait = IDLE_POLL
            try:
                with self._lock:
                    free = self.settings.concurrency - self._in_flight
                if free > 0:
                    claimed = outbox.claim_due(self.store, limit=free, lease_seconds=self._lease, now=self.clock())
                    for c in claimed:
                        with self._lock:
                            self._in_flight += 1
                        self._pool.submit(self._deliver, c)
                    if len(claimed) == free:
                        continue  # there may be more due; a finishing attempt wakes us when a slot frees
                    due = outbox.next_due(self.store)
                    if due is not None:
                        wait = min(IDLE_POLL, max(0.05, due - self.clock()))
            except Exception:
                log.exception("reading the webhook outbox failed; trying again")
            self._wakeup.wait(wait)

    def _deliver(self, claimed: ClaimedDelivery) -> None:
        d = claimed.delivery
        try:
            with bound_contextvars(job_id=d.job_id, webhook_id=d.id):
                self._attempt(d, claimed.secret)
        except Exception:
            log.exception("webhook %s: recording the attempt failed; its lease runs out and it is sent again", d.id)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._wakeup.set()

    def _attempt(self, d: Delivery, secret: str | None) -> None:
        if secret is None:  # its endpoint was deleted after the event
            outbox.abandon(self.store, d.id, now=self.clock())
            self._on_outcome(DeliveryStatus.FAILED.value)
            return
        body = json.dumps(d.payload, separators=(",", ":"), ensure_ascii=False)
        signed_at = datetime.now(UTC)
        headers = {"content-type": "application/json", "webhook-id": d.id,
                   "webhook-timestamp": str(int(signed_at.timestamp())),
                   "webhook-signature": Webhook(secret).sign(d.id, signed_at, body)}
        started = self.clock()
        status_code: int | None = None
        error: str | None = None
        try:
            response = self.client.request("POST", d.url, content=body.encode(), headers=headers)
            status_code = response.status_code
            kind = "succeeded" if response.ok else "http_error"
            if not response.ok:
                excerpt = response.body[:EXCERPT].decode("utf-8", "replace").strip()
                error = f"HTTP {status_code}" + (f": {excerpt}" if excerpt else "")
        except OutboundError as e:
            kind, error = e.kind, str(e)
        now = self.clock()
        succeeded = error is None
        next_at = None if succeeded else self.next_attempt_at(d, now)
        status = outbox.record_attempt(self.store, d.id, started_at=started, seconds=now - started,
                                       status_code=status_code, error=error, succeeded=succeeded,
                                       next_attempt_at=next_at, now=now)
        self._on_attempt(kind)
        if status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED):
            self._on_outcome(status.value)
        host = _host(d.url)
        if succeeded:
            log.info("webhook %s (%s) delivered to %s: HTTP %s", d.id, d.event, host, status_code)
        elif next_at is not None:
            log.warning("webhook %s (%s) to %s failed (%s); attempt %d, next in %.0f s", d.id, d.event, host, error,
                        d.attempts + 1, next_at - now)
        else:
            log.warning("webhook %s (%s) to %s failed (%s); giving up after %d attempt(s)", d.id, d.event, host,
                        error, d.attempts + 1)

    def next_attempt_at(self, d: Delivery, now: float) -> float | None:
        """Exponential backoff with jitter; the last attempt falls at ``retry_for`` after the event; None after."""
        give_up_at = d.created_at + self.settings.retry_for
        if now >= give_up_at:
            return None
        delay = min(self.settings.retry_max_delay, self.settings.retry_base * 2 ** d.attempts)
        delay *= random.uniform(0.75, 1.25)  # noqa: S311 - spreading retries, not a secret
        return min(now + delay, give_up_at)



def _host(url: str) -> str:
    """The host alone, for logs: a URL's path and query may hold a receiver's token."""
    try:
        return httpx.URL(url).host or "?"
    except httpx.InvalidURL:
        return "?"
