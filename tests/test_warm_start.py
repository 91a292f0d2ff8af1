"""Warm starts: models marked preload are loaded in the background when the server starts (readiness says warming
until they are), device workers import their models' libraries as they spawn, and a restarted worker loads again
what it held. The models are slow to construct and their library slow to import (tests/support/p3d_warmmodels.py)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from client_helpers import submit, wait_final
from server import SUPPORT, ServerProcess

MODELS = SUPPORT / "models-warm.yaml"
CONSTRUCT_SECONDS = 2.0  # models-warm.yaml's construct_seconds


@pytest.fixture(scope="module")
def warm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """One server for the module, its first test sees it start."""
    tmp = tmp_path_factory.mktemp("warm")
    marker = tmp / "slowlib-importers"
    env = {"P3D_SLOWLIB_SECONDS": "1", "P3D_SLOWLIB_MARKER": str(marker), "POCKET3D_GPU__AUTO_DETECT": "false"}
    srv = ServerProcess(tmp / "data", models=MODELS, env=env).start()
    yield srv, marker
    srv.stop()


def _wait_ready(c: httpx.Client, timeout: float = 60) -> list[dict]:
    """Poll readiness until 200; returns every 503 body seen before."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        r = c.get("/system/ready")
        if r.status_code == 200:
            assert r.json()["status"] == "ready"
            return seen
        assert r.status_code == 503, r.text
        seen.append(r.json())
        assert time.monotonic() < deadline, seen[-1]
        time.sleep(0.05)


def _seconds_to_first_stage(c: httpx.Client, model: str) -> float:
    """Submit a job to the model and wait for it: seconds from its submission to the model starting its stage."""
    job = wait_final(c, submit(c, "/mesh/generate", {"text_prompt": "x", "model_preference": model})["job_id"])
    assert job["status"] == "succeeded", job["error"]
    started = c.get(f"/jobs/{job['job_id']}/outputs/started.json").json()["run_started"]
    return started - datetime.fromisoformat(job["created_at"]).timestamp()


def _cpu_worker(c: httpx.Client) -> dict:
    (device,) = [d for d in c.get("/system/devices").json() if d["id"] == "cpu"]
    return device


def test_a_preloaded_model_is_warm_when_the_server_says_ready(warm_server: tuple[ServerProcess, Path]) -> None:
    srv, marker = warm_server
    with srv.client() as c:
        early = _wait_ready(c)
        assert early, "readiness answered 200 at once, while a model that takes seconds to load was loading"
        warming = early[0]["details"]
        assert warming["status"] == "warming"
        assert warming["reasons"] == ["loading slow_preloaded on cpu"], warming

        # Ready: the preloaded model is resident, and its first job starts at once...
        assert "slow_preloaded" in _cpu_worker(c)["resident_models"]
        assert _seconds_to_first_stage(c, "slow_preloaded") < 1.0
        # ...where the same model without preload makes its first job wait for its construction (the library it
        # imports was imported when the worker spawned, so that part is not paid again).
        assert _seconds_to_first_stage(c, "slow_cold") >= CONSTRUCT_SECONDS

        # The worker imported the library when it spawned, not the server process.
        importers = marker.read_text().split()
        assert importers == [str(_cpu_worker(c)["worker_pid"])], importers


def test_a_restarted_worker_loads_again_what_it_held(warm_server: tuple[ServerProcess, Path]) -> None:
    srv, _ = warm_server
    with srv.client() as c:
        _wait_ready(c)
        before = _cpu_worker(c)
        assert "slow_preloaded" in before["resident_models"]
        os.kill(before["worker_pid"], signal.SIGKILL)  # what the kernel's out-of-memory killer does

        seen_loading = False
        deadline = time.monotonic() + 60
        while True:
            after = _cpu_worker(c)
            seen_loading |= "slow_preloaded" in after["loading_models"]
            if (after["worker_pid"] not in (None, before["worker_pid"]) and "slow_preloaded" in after["resident_models"]
                    and "slow_preloaded" not in after["loading_models"]):
                break
            assert time.monotonic() < deadline, after
            time.sleep(0.05)
        assert seen_loading, "loaded again by the scheduler, booked as loading meanwhile"
        assert _seconds_to_first_stage(c, "slow_preloaded") < 1.0
