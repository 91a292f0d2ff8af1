"""`pocket3d bench scheduler`: the real policy under simulated time on a small trace, against the baselines."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from pocket3d.cli import main

REFERENCE = Path(__file__).resolve().parents[1] / "bench" / "scheduler" / "reference.yaml"


def saturation_rows(output: str) -> dict[str, dict[str, float]]:
    """policy -> makespan, LB ratio and jobs/h from the saturation table."""
    section = output.split("Saturation:")[1].split("Offered load:")[0]
    rows = {}
    for name in ("pocket3d", "static pinning", "serial FIFO"):
        match = re.search(rf"^{name}\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)", section, re.MULTILINE)
        assert match, f"no saturation row for {name} in:\n{section}"
        rows[name] = {"makespan": float(match[1].replace(",", "")), "ratio": float(match[2]),
                      "jobs_per_hour": float(match[3])}
    return rows


def test_the_benchmark_prints_the_table_writes_the_plot_and_the_policy_beats_serial_fifo(tmp_path: Path) -> None:
    png = tmp_path / "scheduler.png"
    result = CliRunner().invoke(main, ["bench", "scheduler", "--trace", str(REFERENCE), "--jobs", "60",
                                       "--plot", str(png)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Saturation: all 60 jobs queued at t=0" in out and "lower bound" in out
    rows = saturation_rows(out)
    assert rows["pocket3d"]["jobs_per_hour"] > 2 * rows["serial FIFO"]["jobs_per_hour"]
    assert rows["pocket3d"]["jobs_per_hour"] > rows["static pinning"]["jobs_per_hour"]
    assert all(0 < r["ratio"] <= 1.0 for r in rows.values()), "a makespan below the lower bound"

    offered = out.split("Offered load:")[1]
    assert re.search(r"Poisson arrivals at [\d.]+ jobs/s", offered)
    for name in ("pocket3d", "static pinning", "serial FIFO"):
        assert re.search(rf"^{name}\s+mesh_generation\s+\d+\s+[\d,]+\s+[\d,]+", offered, re.MULTILINE), name
        assert re.search(rf"^{name}\s+\d+\s+\d+\s+\d+\s+[\d.]+%", offered, re.MULTILINE), name
    assert "Goals (saturation):" in out

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_the_same_seed_gives_the_same_table_and_another_seed_another(tmp_path: Path) -> None:
    def run(seed: int) -> str:
        result = CliRunner().invoke(main, ["bench", "scheduler", "--trace", str(REFERENCE), "--jobs", "30",
                                           "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        return result.output

    assert run(5) == run(5)
    assert saturation_rows(run(5)) != saturation_rows(run(6))


def test_a_trace_naming_an_unknown_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    trace = tmp_path / "bad.yaml"
    trace.write_text(REFERENCE.read_text().replace("stages: [unirig]", "stages: [unirig-xl]"))
    result = CliRunner().invoke(main, ["bench", "scheduler", "--trace", str(trace), "--jobs", "10"])
    assert result.exit_code == 2
    assert "pipeline rig uses unknown models ['unirig-xl']" in result.output
