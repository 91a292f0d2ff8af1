"""`pocket3d bench scheduler`: the real policy under simulated time on small traces, against the baselines."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from click.testing import CliRunner

from pocket3d.cli import _bench_module, main

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "bench" / "scheduler"
REFERENCE = TRACES / "reference.yaml"


def saturation_rows(output: str) -> dict[str, dict[str, float]]:
    """policy -> makespan, LB ratio and jobs/h from the saturation table (one seed)."""
    section = output.split("Saturation:")[1].split("Offered load:")[0]
    rows = {}
    for name in ("pocket3d", "shortest work", "static pinning", "serial FIFO"):
        match = re.search(rf"^{name}\s+\d+\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)", section, re.MULTILINE)
        assert match, f"no saturation row for {name} in:\n{section}"
        rows[name] = {"makespan": float(match[1].replace(",", "")), "ratio": float(match[2]),
                      "jobs_per_hour": float(match[3])}
    return rows


def bench(*args: str) -> str:
    result = CliRunner().invoke(main, ["bench", "scheduler", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_benchmark_prints_the_tables_and_goals_writes_the_plot_and_the_policy_beats_the_baselines(
        tmp_path: Path) -> None:
    png = tmp_path / "scheduler.png"
    out = bench("--trace", str(REFERENCE), "--jobs", "60", "--seed", "1", "--plot", str(png))
    assert "Saturation: all 60 jobs queued at t=0" in out and "lower bound" in out
    rows = saturation_rows(out)
    assert rows["pocket3d"]["jobs_per_hour"] > 2 * rows["serial FIFO"]["jobs_per_hour"]
    assert rows["pocket3d"]["jobs_per_hour"] > rows["static pinning"]["jobs_per_hour"]
    assert all(0 < r["ratio"] <= 1.0 for r in rows.values()), "a makespan below the lower bound"

    offered = out.split("Offered load:")[1]
    for name in ("pocket3d", "shortest work", "static pinning", "serial FIFO", "FIFO floor"):
        # latency p50/p95 overall, per feature and per priority; then loads, evictions, busy and loading shares
        assert re.search(rf"^{name}\s+1(\s+[\d,]+/[\d,]+){{5,}}", offered, re.MULTILINE), name
        assert re.search(rf"^{name}\s+1\s+\d+\s+\d+\s+\d+\s+[\d.]+%\s+[\d.]+%", offered, re.MULTILINE), name
    assert "prio 5" in offered and "prio -5" in offered
    # every goal of the trace, with its measured figure and whether it was met
    goals = out.split("Goals (reference)")[1]
    assert len(re.findall(r"seed 1 [\d.]+ (met|MISSED)", goals)) == 5

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_the_same_seed_gives_the_same_table_and_another_seed_another() -> None:
    def run(seed: int) -> str:
        return bench("--trace", str(REFERENCE), "--jobs", "30", "--seed", str(seed))

    assert run(5) == run(5)
    assert saturation_rows(run(5)) != saturation_rows(run(6))


def test_the_lower_bound_counts_what_fits_where_and_the_copies_a_model_can_have(tmp_path: Path) -> None:
    # TRELLIS.2 fits only on the 48 GB card: its work alone bounds the makespan, and a per-node bound over
    # both cards would claim a makespan no schedule can reach.
    trace = tmp_path / "one-big.yaml"
    trace.write_text(yaml.safe_dump({
        "devices": [{"id": "cuda:0", "memory_gb": 24}, {"id": "cuda:1", "memory_gb": 48}],
        "models": {"trellis2": {"memory_gb": 32, "load_s": 40, "run_s": 20}, "rembg": {"memory_gb": 1, "load_s": 2,
                                                                                       "run_s": 1}},
        "pipelines": [{"name": "t2", "feature": "mesh_generation", "share": 1.0, "stages": ["rembg", "trellis2"]}],
        "jobs": 20, "seeds": [1]}))
    out = bench("--trace", str(trace))
    bound = re.search(r"seed 1: lower bound ([\d,]+) s \((.*)\)", out)
    assert "trellis2" in bound[2] and "1 copy" in bound[2], bound[0]
    assert float(bound[1].replace(",", "")) >= 40 + 20 * 20 * 0.75  # its first load, then its stages one by one
    assert all(0 < r["ratio"] <= 1.0 for name, r in saturation_rows(out).items() if name != "static pinning")


def test_the_shipped_trace_uses_the_shipped_budgets_and_max_concurrent() -> None:
    """shipped.yaml states config/'s figures; a change there must show up here."""
    trace = yaml.safe_load((TRACES / "shipped.yaml").read_text())
    gpu = yaml.safe_load((ROOT / "config" / "system.yaml").read_text())["gpu"]
    assert trace["gpu"] == {"max_utilization": gpu["max_utilization"], "memory_buffer_mb": gpu["memory_buffer"]}
    shipped = {model_id: entry for feature in yaml.safe_load((ROOT / "config" / "models.yaml").read_text())["models"]
               .values() for model_id, entry in (feature or {}).items()}
    for name, model in trace["models"].items():
        assert model["max_concurrent"] == shipped[model["config_id"]].get("max_concurrent", 1), name


def test_every_shipped_trace_loads_and_names_its_goals() -> None:
    run = _bench_module("scheduler")
    load_trace, shipped_traces = run.load_trace, run.shipped_traces
    names = {p.stem for p in shipped_traces()}
    assert {"reference", "shipped", "two-cards", "bursty", "many-small"} <= names
    goals = {p.stem: [g.metric for g in load_trace(p).goals] for p in shipped_traces()}
    assert goals["shipped"] == ["saturation.vs_static"]
    assert set(goals["two-cards"]) == {"saturation.lb_ratio", "saturation.loading_share"}


def test_a_trace_naming_an_unknown_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    trace = tmp_path / "bad.yaml"
    trace.write_text(REFERENCE.read_text().replace("stages: [unirig]", "stages: [unirig-xl]"))
    result = CliRunner().invoke(main, ["bench", "scheduler", "--trace", str(trace), "--jobs", "10"])
    assert result.exit_code == 2
    assert "pipeline rig uses unknown models ['unirig-xl']" in result.output
