"""Webhooks, end to end: a real server, a real receiver on loopback, signatures checked by standardwebhooks.

Names other than loopback literals resolve only through a stub resolver (an in-process server), so no request
ever leaves this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from client_helpers import IMAGES, submit, upload, wait_final
from receiver import Receiver, StubResolverForTests
from server import SUPPORT, InProcessServer
from standardwebhooks import Webhook, WebhookVerificationError

from pocket3d.config import load_settings
from pocket3d.node import Node

WEBHOOK_ENV = {"POCKET3D_WEBHOOKS__ALLOW_HOSTS": '["127.0.0.1"]', "POCKET3D_WEBHOOKS__RETRY_BASE": "0.2",
               "POCKET3D_WEBHOOKS__PROGRESS_INTERVAL": "0.5"}


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory):
    """One server whose webhooks may reach the loopback receivers, retrying fast."""
    from server import ServerProcess

    srv = ServerProcess(tmp_path_factory.mktemp("hooks") / "data", env=WEBHOOK_ENV).start()
    yield srv
    srv.stop()


@pytest.fixture
def hooks(hook_server):
    """A client of that server; the endpoints a test registers are deleted after it."""
    with hook_server.client() as c:
        yield c
        for e in c.get("/webhooks").json()["endpoints"]:
            c.delete(f"/webhooks/{e['id']}")


def _deliveries(c: httpx.Client, job_id: str, want: int = 1, status: str = "succeeded", timeout: float = 30) -> list:
    deadline = time.monotonic() + timeout
    while True:
        found = c.get(f"/jobs/{job_id}/deliveries").json()["deliveries"]
        if len([d for d in found if d["status"] == status]) >= want:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def _image_job(c: httpx.Client, **extra) -> str:
    file_id = upload(c, IMAGES / "typical_vehicle_biplane.png")["file_id"]
    return submit(c, "/mesh/generate", {"images": [file_id], **extra})["job_id"]


def test_deliveries_are_signed_and_retried_until_a_2xx(hooks: httpx.Client) -> None:
    c = hooks
    with Receiver(statuses=[500, 500, 200]) as rx:
        secret = c.get("/webhooks/secret").json()["secret"]
        assert secret.startswith("whsec_") and c.get("/webhooks/secret").json()["secret"] == secret
        job_id = _image_job(c, webhook_url=f"{rx.url}/hooks/p3d?token=t1")
        assert wait_final(c, job_id)["status"] == "succeeded"
        got = rx.wait_for(3)
        [delivery] = _deliveries(c, job_id)

    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200], "three attempts, one success"
    assert delivery["event"] == "job.succeeded" and delivery["endpoint_id"] is None
    assert delivery["attempts"][0]["error"].startswith("HTTP 500")
    assert len(got) == 3 and {r.headers["webhook-id"] for r in got} == {delivery["id"]}, "one id on every retry"
    for r in got:
        assert r.path == "/hooks/p3d?token=t1" and r.headers["content-type"] == "application/json"
        assert "cookie" not in r.headers
        message = Webhook(secret).verify(r.body, r.headers)
        assert message["type"] == "job.succeeded" and message["data"]["job_id"] == job_id
        assert message["data"]["status"] == "succeeded"
        assert [o["name"] for o in message["data"]["outputs"]] == ["model.glb", "preview.png"]
    with pytest.raises(WebhookVerificationError):  # a tampered body does not verify
        Webhook(secret).verify(got[0].body.replace(b"succeeded", b"failed"), got[0].headers)


def test_registered_endpoints_get_the_events_they_chose(hooks: httpx.Client) -> None:
    c = hooks
    with Receiver() as rx:
        r = c.post("/webhooks", json={"url": f"{rx.url}/failures", "events": ["job.failed"],
                                      "description": "pager"})
        assert r.status_code == 201, r.text
        endpoint = r.json()
        assert endpoint["secret"].startswith("whsec_")
        listed = c.get("/webhooks").json()["endpoints"]
        assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0], "shown once"
        assert "secret" not in c.get(f"/webhooks/{endpoint['id']}").json()

        ok_job = _image_job(c)
        failed = submit(c, "/mesh/generate", {"text_prompt": "a chair", "model_preference": "test_failing", "parameters":
                                              {"message": "weights missing at /opt/TRELLIS.2/ckpts/model.pt"}})["job_id"]
        assert wait_final(c, failed)["status"] == "failed" and wait_final(c, ok_job)["status"] == "succeeded"
        [got] = rx.wait_for(1)
        [delivery] = _deliveries(c, failed)
        assert c.get(f"/jobs/{ok_job}/deliveries").json()["deliveries"] == [], "job.succeeded was not asked for"
        message = Webhook(endpoint["secret"]).verify(got.body, got.headers)
        assert message["type"] == "job.failed" and message["data"]["error"]["code"] == "MODEL_ERROR"
        # The message leaves the server: no server paths in it, as the API shows none to a non-admin key.
        assert message["data"]["error"]["message"] == "RuntimeError: weights missing at <server path>"
        assert delivery["endpoint_id"] == endpoint["id"] and got.path == "/failures"
        owner_secret = c.get("/webhooks/secret").json()["secret"]
        with pytest.raises(WebhookVerificationError):
            Webhook(owner_secret).verify(got.body, got.headers)

        for i in range(4):
            assert c.post("/webhooks", json={"url": f"{rx.url}/{i}", "events": ["job.succeeded"]}).status_code == 201
        r = c.post("/webhooks", json={"url": f"{rx.url}/six", "events": ["job.succeeded"]})
        assert r.status_code == 409 and r.json()["error_code"] == "WEBHOOK_LIMIT_REACHED"
        assert c.delete(f"/webhooks/{endpoint['id']}").status_code == 204
        r = c.get(f"/webhooks/{endpoint['id']}")
        assert r.status_code == 404 and r.json()["error_code"] == "WEBHOOK_NOT_FOUND"


def test_the_cli_registers_endpoints_and_shows_deliveries(hook_server, hooks: httpx.Client, tmp_path: Path) -> None:
    """pocket3d webhooks create/list/secret/delete, generate --webhook-url/--webhook-event, jobs deliveries."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("POCKET3D_")}, "POCKET3D_URL": hook_server.url}

    def pocket3d(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pocket3d", *args, "--json"], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)

    with Receiver() as rx:
        endpoint = json.loads(pocket3d("webhooks", "create", f"{rx.url}/pager", "--event", "job.failed").stdout)
        assert endpoint["events"] == ["job.failed"] and endpoint["secret"].startswith("whsec_")
        assert [e["id"] for e in json.loads(pocket3d("webhooks", "list").stdout)["endpoints"]] == [endpoint["id"]]
        own_secret = json.loads(pocket3d("webhooks", "secret").stdout)["secret"]
        run = pocket3d("generate", "--prompt", "a chair", "--model", "test_failing", "--webhook-url",
                       f"{rx.url}/own", "--webhook-event", "job.failed")
        assert run.returncode == 1, run.stderr
        job_id = json.loads(run.stdout)["job"]["job_id"]
        got = {r.path: r for r in rx.wait_for(2)}
        deliveries = json.loads(pocket3d("jobs", "deliveries", job_id).stdout)["deliveries"]
        assert json.loads(pocket3d("webhooks", "delete", endpoint["id"]).stdout) == {"deleted": [endpoint["id"]]}
    assert Webhook(endpoint["secret"]).verify(got["/pager"].body, got["/pager"].headers)["type"] == "job.failed"
    assert Webhook(own_secret).verify(got["/own"].body, got["/own"].headers)["data"]["job_id"] == job_id
    assert {(d["event"], d["endpoint_id"]) for d in deliveries} == {("job.failed", endpoint["id"]),
                                                                   ("job.failed", None)}
    assert hooks.get("/webhooks").json()["endpoints"] == []


def test_progress_events_are_rate_limited(hooks: httpx.Client) -> None:
    c = hooks
    with Receiver() as rx:
        job_id = _image_job(c, webhook_url=f"{rx.url}/p", webhook_events=["job.progress", "job.succeeded"],
                            parameters={"delay": 2.0, "steps": 20})
        wait_final(c, job_id)
        deliveries = _deliveries(c, job_id)
    events = [d["event"] for d in deliveries]
    assert events[-1] == "job.succeeded" and "job.progress" in events
    # 20 progress reports over 2 s, at most one message every 0.5 s
    assert 1 <= events.count("job.progress") <= 6, events
    progress = [d for d in deliveries if d["event"] == "job.progress"]
    assert all(d["status"] in ("succeeded", "superseded") for d in progress)


def test_a_delivery_interrupted_by_kill_9_is_sent_after_the_restart(make_server, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = make_server(data_dir, env=WEBHOOK_ENV)
    with Receiver(hold_first=True) as rx:
        with srv.client() as c:
            secret = c.get("/webhooks/secret").json()["secret"]
            job_id = _image_job(c, webhook_url=f"{rx.url}/hook")
            rx.wait_for(1)  # the job has ended and its delivery is in flight, unanswered
        srv.kill()
        rx.release()  # answers a sender that is gone: nothing was recorded as delivered
        srv2 = make_server(data_dir, env=WEBHOOK_ENV)
        with srv2.client() as c:
            got = rx.wait_for(2)
            [delivery] = _deliveries(c, job_id)
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"] == delivery["id"]
    assert Webhook(secret).verify(got[1].body, got[1].headers)["data"]["job_id"] == job_id
    assert [a["status_code"] for a in delivery["attempts"]] == [200]


def test_private_and_metadata_webhook_urls_are_refused_at_submit(client: httpx.Client) -> None:
    before = len(client.get("/jobs", params={"limit": 100}).json()["jobs"])
    for url, code in [("http://127.0.0.1:9/hook", "WEBHOOK_URL_FORBIDDEN"),
                      ("http://169.254.169.254/latest/meta-data/", "WEBHOOK_URL_FORBIDDEN"),
                      ("http://10.0.0.5/hook", "WEBHOOK_URL_FORBIDDEN"),
                      ("http://[::1]:8080/", "WEBHOOK_URL_FORBIDDEN"),
                      ("ftp://example.com/hook", "WEBHOOK_URL_INVALID"),
                      ("https://user:pw@example.com/", "WEBHOOK_URL_INVALID")]:
        r = client.post("/mesh/generate", json={"text_prompt": "a chair", "webhook_url": url})
        assert r.status_code == 422 and r.json()["error_code"] == code, (url, r.text)
        r = client.post("/webhooks", json={"url": url, "events": ["job.succeeded"]})
        assert r.status_code == 422 and r.json()["error_code"] == code, (url, r.text)
    assert len(client.get("/jobs", params={"limit": 100}).json()["jobs"]) == before, "no job was made"
    r = client.post("/mesh/generate", json={"text_prompt": "a chair", "webhook_url": "http://169.254.169.254/"})
    assert "metadata" in r.json()["message"] and r.json()["details"]["address"] == "169.254.169.254"
    assert "webhooks.allow_hosts" in r.json()["hint"]


def test_names_that_resolve_to_private_or_metadata_addresses_are_refused(tmp_path: Path) -> None:
    resolver = StubResolverForTests({
        "metadata.example.test": [["169.254.169.254"]],
        "intranet.example.test": [["10.20.30.40"]],
        "mixed.example.test": [["93.184.216.34", "127.0.0.1"]],
        # public when pocket3d checks at submit, loopback when it delivers: DNS rebinding
        "rebinding.example.test": [["93.184.216.34"], ["127.0.0.1"]],
    })
    settings = load_settings(SUPPORT / "system.yaml", data_dir=tmp_path / "data", models_file=SUPPORT / "models.yaml",
                             webhooks={"retry_base": 0.1, "retry_for": 1.0})
    node = Node(settings, resolver=resolver)
    # No scheduler (nothing runs: a queued job is cancelled), only the sender.
    node.webhooks.start(only_sender=True)
    try:
        with InProcessServer(node, manage_node=False) as c:
            for name, why in [("metadata.example.test", "metadata"), ("intranet.example.test", "private"),
                              ("mixed.example.test", "loopback")]:
                r = c.post("/mesh/generate", json={"text_prompt": "a chair", "webhook_url": f"https://{name}/h"})
                assert r.status_code == 422, r.text
                assert r.json()["error_code"] == "WEBHOOK_URL_FORBIDDEN" and why in r.json()["message"]
            r = c.post("/mesh/generate", json={"text_prompt": "a chair", "model_preference": "test_failing",
                                               "webhook_url": "http://rebinding.example.test/h",
                                               "webhook_events": ["job.cancelled"]})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            assert c.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"
            [delivery] = _deliveries(c, job_id, status="failed")
    finally:
        node.webhooks.stop()
        node.stop()
    attempts = delivery["attempts"]
    assert attempts and all(a["status_code"] is None and "loopback" in a["error"] for a in attempts), attempts
    assert resolver.asked.count("rebinding.example.test") == 1 + len(attempts), "checked again at every attempt"
    assert json.dumps(delivery).count("93.184.216.34") == 0
