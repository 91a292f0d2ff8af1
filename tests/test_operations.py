"""Operations on one server run as in production: auth on, JSON logs (--log-format json), metrics on the API
port (admin keys) and on metrics.port. A known set of jobs runs; the metrics must count exactly it, and the log
must be JSON on every line, one id for a request's lines, and never a key."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from client_helpers import IMAGES, submit, upload, wait_final
from prometheus_client.parser import text_string_to_metric_families
from receiver import Receiver
from server import ServerProcess, cli, free_port

AUTH = {"POCKET3D_AUTH__ENABLED": "true"}


def _key(data_dir, name: str, role: str) -> str:
    token = cli(data_dir, "keys", "create", "--name", name, "--role", role, env=AUTH).stdout.strip()
    assert token.startswith("p3d_")
    return token


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Run:
    """What the module's server was asked to do, to compare the metrics and the log against."""

    def __init__(self, srv: ServerProcess, admin: str, user: str, metrics_port: int):
        self.srv, self.admin, self.user, self.metrics_port = srv, admin, user, metrics_port
        self.sse_open_while_streaming: float | None = None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("ops") / "data"
    admin, user = _key(data_dir, "ops-admin", "admin"), _key(data_dir, "ops-user", "user")
    metrics_port = free_port()
    srv = ServerProcess(data_dir, env={**AUTH, "POCKET3D_METRICS__PORT": str(metrics_port),
                                       "POCKET3D_WEBHOOKS__ALLOW_HOSTS": '["127.0.0.1"]'},
                        serve_args=("--log-format", "json")).start()
    ran = Run(srv, admin, user, metrics_port)
    try:
        with Receiver() as rx, srv.client(admin) as c:
            jobs = []
            for i in range(3):
                file_id = upload(c, IMAGES / "typical_vehicle_biplane.png")["file_id"]
                body = {"images": [file_id], **({"webhook_url": f"{rx.url}/done"} if i == 0 else {})}
                r = c.post("/mesh/generate", json=body, headers={"X-Request-ID": f"ops-submit-{i}"})
                assert r.status_code == 202, r.text
                jobs.append(r.json()["job_id"])
            jobs.append(submit(c, "/mesh/generate", {"text_prompt": "a chair", "model_preference": "test_failing"})
                        ["job_id"])
            for j in jobs:
                wait_final(c, j)
            rx.wait_for(1)

            file_id = upload(c, IMAGES / "typical_vehicle_biplane.png")["file_id"]
            slow = submit(c, "/mesh/generate", {"images": [file_id], "parameters": {"delay": 60, "steps": 100}})
            streaming = threading.Event()

            def follow() -> None:
                with c.stream("GET", f"/jobs/{slow['job_id']}/events", timeout=60) as r:
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            streaming.set()

            follower = threading.Thread(target=follow, daemon=True)
            follower.start()
            assert streaming.wait(30)
            ran.sse_open_while_streaming = _value(_samples(c.get(f"{srv.url}/metrics").text),
                                                  "pocket3d_sse_streams_open")
            c.post(f"/jobs/{slow['job_id']}/cancel")
            assert wait_final(c, slow["job_id"])["status"] == "cancelled"
            follower.join(30)

            # The worker dies while idle: the node replaces it.
            [cpu] = [d for d in c.get("/system/devices").json() if d["id"] == "cpu"]
            os.kill(cpu["worker_pid"], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while True:
                [cpu2] = [d for d in c.get("/system/devices").json() if d["id"] == "cpu"]
                if cpu2["worker_pid"] not in (None, cpu["worker_pid"]):
                    break
                assert time.monotonic() < deadline, cpu2
                time.sleep(0.1)
            # A request with a key that is not valid: its secret must not reach the log either.
            assert httpx.get(f"{srv.url}/api/v1/jobs", headers={"X-API-Key": "p3d_deadbeef00_not-a-real-secret"}) \
                .status_code == 401
        yield ran
    finally:
        srv.stop()


def test_metrics_count_what_was_run(run: Run) -> None:
    text = httpx.get(f"{run.srv.url}/metrics", headers={"Authorization": f"Bearer {run.admin}"}).text
    m = _samples(text)
    assert _value(m, "pocket3d_jobs_submitted_total", feature="mesh_generation") == 5
    finished = {(labels["status"], labels["error_code"]): v for (name, lbl), v in m.items()
                if name == "pocket3d_jobs_finished_total" for labels in [dict(lbl)]}
    assert finished == {("succeeded", ""): 3, ("failed", "MODEL_ERROR"): 1, ("cancelled", ""): 1}
    assert _value(m, "pocket3d_stage_duration_seconds_count", model="test_heightfield", device="cpu") == 3
    assert _value(m, "pocket3d_stage_duration_seconds_count", model="export", device="server") == 3
    loads = _value(m, "pocket3d_model_loads_total", model="test_heightfield", device="cpu")
    assert loads >= 1 and _value(m, "pocket3d_model_load_seconds_count", model="test_heightfield", device="cpu") == loads
    assert _value(m, "pocket3d_model_loads_total", model="test_failing", device="cpu") == 1
    assert _value(m, "pocket3d_worker_restarts_total", device="cpu", cause="crashed") == 1
    assert _value(m, "pocket3d_http_request_duration_seconds_count", method="POST", route="/api/v1/mesh/generate",
                  status="202") == 5
    assert _value(m, "pocket3d_http_request_duration_seconds_count", method="GET", route="/api/v1/jobs",
                  status="401") == 1
    assert _value(m, "pocket3d_webhook_deliveries_total", outcome="succeeded") == 1
    assert _value(m, "pocket3d_webhook_attempts_total", outcome="succeeded") == 1
    assert _value(m, "pocket3d_webhook_deliveries_pending") == 0
    assert not [v for (name, _), v in m.items() if name == "pocket3d_queue_depth" and v], "nothing waits"
    assert ("pocket3d_queue_depth", (("feature", "auto_rigging"), ("priority", "0"))) in m, "an empty queue reads 0"
    assert _value(m, "pocket3d_device_memory_total_bytes", device="cpu") > 0
    assert 0 < _value(m, "pocket3d_device_memory_budget_bytes", device="cpu") \
        <= _value(m, "pocket3d_device_memory_total_bytes", device="cpu")
    assert run.sse_open_while_streaming == 1 and _value(m, "pocket3d_sse_streams_open") == 0


def test_metrics_need_an_admin_key_or_the_metrics_port(run: Run) -> None:
    url = f"{run.srv.url}/metrics"
    r = httpx.get(url)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHORIZED"
    r = httpx.get(url, headers={"Authorization": f"Bearer {run.user}"})
    assert r.status_code == 403 and r.json()["error_code"] == "FORBIDDEN"
    r = httpx.get(url, headers={"X-API-Key": run.admin})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    r = httpx.get(f"http://127.0.0.1:{run.metrics_port}/metrics")
    assert r.status_code == 200 and "pocket3d_jobs_submitted_total" in r.text


def test_json_logs_one_id_a_request_and_never_a_key(run: Run) -> None:
    # A request of the test's own, with an id the server makes, just before the log is read.
    r = httpx.get(f"{run.srv.url}/api/v1/system/health")
    generated = r.headers["x-request-id"]
    time.sleep(0.2)  # the access line is written as the response completes
    text = run.srv.log()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line parses
    assert all({"time", "level", "logger", "message", "request_id"} <= line.keys() for line in lines)
    assert "/done" not in text, "no log line holds a webhook URL's path or query (they may carry a token)"

    submit_lines = [line for line in lines if line["request_id"] == "ops-submit-1"]
    assert {line["logger"] for line in submit_lines} >= {"pocket3d.api.submission", "pocket3d.access"}
    [access] = [line for line in submit_lines if line["logger"] == "pocket3d.access"]
    admin_key_id = run.admin.split("_")[1]
    assert access["method"] == "POST" and access["route"] == "/api/v1/mesh/generate" and access["status"] == 202
    assert access["key_id"] == admin_key_id and isinstance(access["seconds"], float)
    assert [line["logger"] for line in lines if line["request_id"] == generated] == ["pocket3d.access"]

    [submitted] = [line for line in submit_lines if line["logger"] == "pocket3d.api.submission"]
    assert submitted["job_id"] in submitted["message"], "a job's lines are found by its job_id, from the submit on"
    stage_lines = [line for line in lines if line.get("job_id") and line.get("model") == "test_heightfield"]
    assert any(line.get("stage") and line.get("device") == "cpu" for line in stage_lines)
    worker_lines = [line for line in lines if line["logger"].startswith("pocket3d.workers.child")]
    # each worker names its device: cpu for the models, export for pocket3d's own stages (orient, export)
    assert worker_lines and {line["device"] for line in worker_lines} <= {"cpu", "export"}
    assert any(line["device"] == "cpu" for line in worker_lines)
    [failed] = [line for line in lines if line["logger"] == "pocket3d.scheduler.node"
                and line.get("model") == "test_failing" and "MODEL_ERROR" in line["message"]]
    raised = [line for line in worker_lines if "test_failing" in line["message"] and "raised" in line["message"]]
    assert raised and all({"job_id": failed["job_id"], "stage": "generate_mesh", "model": "test_failing"}.items()
                          <= line.items() and line["exception"] for line in raised), \
        "the worker's traceback says which job, stage and model it belongs to"

    for token in (run.admin, run.user, "p3d_deadbeef00_not-a-real-secret"):
        assert token.split("_", 2)[2] not in text and token not in text


def test_the_grafana_dashboard_uses_the_metrics_served(run: Run) -> None:
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "pocket3d-dashboard.json")
                           .read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for e in exprs for name in re.findall(r"\bpocket3d_[a-z_]+", e)}
    text = httpx.get(f"http://127.0.0.1:{run.metrics_port}/metrics").text
    families = list(text_string_to_metric_families(text))
    served = {s.name for f in families for s in f.samples} | {
        f.name + suffix for f in families for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    assert used and used <= served, sorted(used - served)
    assert {"pocket3d_queue_depth", "pocket3d_stage_duration_seconds_bucket", "pocket3d_device_memory_used_bytes",
            "pocket3d_worker_restarts_total", "pocket3d_http_request_duration_seconds_bucket",
            "pocket3d_sse_streams_open", "pocket3d_webhook_deliveries_total"} <= used


def test_the_log_file_rolls_over_at_max_size_in_whole_lines(make_server, tmp_path) -> None:
    """The server writes its log in batches (one write per batch); the file still rolls over near max_size, keeps
    backup_count old files, and every line in them is one whole JSON object."""
    srv = make_server(env={"POCKET3D_LOGGING__FILE": "logs/server.log", "POCKET3D_LOGGING__FORMAT": "json",
                           "POCKET3D_LOGGING__MAX_SIZE": "16384", "POCKET3D_LOGGING__BACKUP_COUNT": "2"})
    with srv.client() as c:
        for i in range(400):
            assert c.get("/system/health", headers={"X-Request-ID": f"roll-{i}"}).status_code == 200
    time.sleep(0.5)  # the last batch is written
    logs = tmp_path / "data" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["server.log", "server.log.1", "server.log.2"]
    seen = []
    for name in ("server.log.2", "server.log.1", "server.log"):
        text = (logs / name).read_text()
        assert len(text.encode()) <= 2 * 16384, f"{name} is {len(text)} bytes"
        lines = [json.loads(line) for line in text.splitlines()]  # every line whole
        seen += [line["request_id"] for line in lines if line["logger"] == "pocket3d.access"]
    assert seen[-1] == "roll-399" and seen == [f"roll-{i}" for i in range(400 - len(seen), 400)], \
        "the newest lines, in order, none lost between the files"
