"""The scheduler benchmark: pocket3d's policy and two baselines under simulated time, on one trace.

    pocket3d bench scheduler --trace bench/scheduler/reference.yaml [--plot PNG] [--seed N] [--jobs N]
    .venv/bin/python bench/scheduler/run.py --trace ... (the same)

The trace (see reference.yaml) names the devices, the model profiles and the job mix; the jobs are drawn from
the mix with the seed. Each policy runs in :mod:`pocket3d.scheduler.simulator`, which calls the real
``plan()``, in two scenarios:

* saturation: every job queued at t=0. Reported: the makespan against a lower bound that ignores memory, the
  larger of (total run seconds + one load of every model used) / number of GPUs and the longest single
  pipeline (run seconds); throughput and its ratio to the baselines.
* offered load: Poisson arrivals at ``offered_load`` (0.85) x the pocket3d policy's measured saturation
  throughput, the same arrivals for every policy. Reported: p50 and p95 job latency per feature, loads,
  evictions, idle unloads and the GPUs' busy share. A baseline slower than the offered rate builds a queue
  that only ends with the trace, which its latencies show.

Baselines: serial FIFO (one stage in flight on the node, on its largest GPU: the seed design's queue loop) and
static pinning (each model fixed up front to one GPU, FIFO per GPU: the ProtoScale seed).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml

from pocket3d.scheduler.policy import (
    DeviceView, ModelProfile, SchedulingPolicy, pocket3d_policy, serial_fifo_policy, static_pinning_policy)
from pocket3d.scheduler.simulator import SimDevice, SimJob, SimResult, SimStage, Simulator

GB = 1024.0  # MB
FEATURES = ("mesh_generation", "texture_generation", "segmentation", "auto_rigging")


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class Pipeline:
    name: str
    feature: str
    stages: tuple[str, ...]
    share: float


@dataclass(frozen=True)
class Trace:
    path: Path
    devices: list[SimDevice]
    models: dict[str, ModelProfile]
    pipelines: list[Pipeline]
    jobs: int
    seed: int
    run_jitter: float
    priorities: dict[int, float]
    priority_weights: dict[str, float]
    idle_timeout: float | None
    offered_load: float


def load_trace(path: Path) -> Trace:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise TraceError(f"{path}: {e}") from None
    try:
        gpu = raw.get("gpu", {})
        utilization = float(gpu.get("max_utilization", 1.0))
        buffer_mb = float(gpu.get("memory_buffer_mb", 0))
        slots = raw.get("slots", 1)
        devices = [SimDevice(str(d["id"]), d.get("kind", "cuda"),
                             d["memory_gb"] * GB * utilization - buffer_mb, d.get("slots", slots))
                   for d in raw["devices"]]
        default_concurrency = int(raw.get("max_concurrent", len(devices)))
        models = {name: ModelProfile(name, m["memory_gb"] * GB, float(m["load_s"]), float(m["run_s"]),
                                     int(m.get("max_concurrent", default_concurrency)), bool(m.get("pinned", False)),
                                     tuple(m.get("devices", ["cuda"])))
                  for name, m in raw["models"].items()}
        pipelines = [Pipeline(p["name"], p["feature"], tuple(p["stages"]), float(p["share"]))
                     for p in raw["pipelines"]]
        trace = Trace(Path(path), devices, models, pipelines, int(raw.get("jobs", 1000)), int(raw.get("seed", 0)),
                      float(raw.get("run_jitter", 0.0)),
                      {int(k): float(v) for k, v in (raw.get("priorities") or {0: 1.0}).items()},
                      {str(k): float(v) for k, v in (raw.get("priority_weights") or {}).items()},
                      raw.get("model_idle_timeout"), float(raw.get("offered_load", 0.85)))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TraceError(f"{path}: malformed trace ({type(e).__name__}: {e})") from None
    for p in trace.pipelines:
        missing = [s for s in p.stages if s not in trace.models]
        if missing:
            raise TraceError(f"{path}: pipeline {p.name} uses unknown models {missing}")
    for m in trace.models.values():
        if not any(d.kind in m.device_kinds and d.budget_mb >= m.memory_mb for d in trace.devices):
            raise TraceError(f"{path}: {m.id} ({m.memory_mb / GB:.0f} GB) fits on no device")
    if not trace.devices or not trace.pipelines or sum(p.share for p in trace.pipelines) <= 0:
        raise TraceError(f"{path}: needs devices, pipelines and positive shares")
    return trace


def mix_counts(pipelines: Sequence[Pipeline], n: int) -> list[int]:
    """Jobs of each pipeline among ``n``: the shares exactly, rounded by largest remainder."""
    total = sum(p.share for p in pipelines)
    exact = [p.share / total * n for p in pipelines]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def make_jobs(trace: Trace, n: int, seed: int) -> list[SimJob]:
    """``n`` jobs, all submitted at t=0: each pipeline's share of them exactly (so two seeds differ in order,
    run times and priorities, not in how much work of each kind there is), in an order shuffled by the seed."""
    rng = random.Random(seed)
    priorities, weights = list(trace.priorities), list(trace.priorities.values())
    drawn = [p for p, count in zip(trace.pipelines, mix_counts(trace.pipelines, n), strict=True)
             for _ in range(count)]
    rng.shuffle(drawn)
    jobs = []
    for i, p in enumerate(drawn):
        stages = tuple(SimStage(m, trace.models[m].run_seconds * rng.uniform(1 - trace.run_jitter,
                                                                            1 + trace.run_jitter))
                       for m in p.stages)
        jobs.append(SimJob(f"j{i:05d}", p.feature, stages, 0.0, rng.choices(priorities, weights)[0], p.name))
    return jobs


def with_poisson_arrivals(jobs: Sequence[SimJob], rate: float, seed: int) -> list[SimJob]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for job in jobs:
        out.append(replace(job, submitted_at=t))
        t += rng.expovariate(rate)
    return out


def lower_bound(jobs: Sequence[SimJob], models: dict[str, ModelProfile],
                gpus: int) -> tuple[float, float, float, float]:
    """(bound, total run seconds, one load of each model used, longest pipeline); memory is ignored."""
    run = sum(s.run_seconds for j in jobs for s in j.stages)
    loads = sum(models[m].load_seconds for m in {s.model_id for j in jobs for s in j.stages})
    longest = max(sum(s.run_seconds for s in j.stages) for j in jobs)
    return max((run + loads) / gpus, longest), run, loads, longest


def device_views(devices: Sequence[SimDevice]) -> list[DeviceView]:
    return [DeviceView(d.id, d.kind, d.budget_mb, {}, slots=d.slots) for d in devices]


def policies(trace: Trace) -> list[SchedulingPolicy]:
    return [pocket3d_policy(trace.priority_weights), static_pinning_policy(trace.models, device_views(trace.devices)),
            serial_fifo_policy()]


def simulate(trace: Trace, policy: SchedulingPolicy, jobs: Sequence[SimJob]) -> SimResult:
    return Simulator(trace.devices, trace.models, policy, idle_timeout=trace.idle_timeout).run(jobs)


@dataclass
class Report:
    trace: Trace
    jobs: int
    seed: int
    bound: tuple[float, float, float, float]
    saturation: list[SimResult]
    rate: float
    loaded: list[SimResult]

    def by_policy(self, results: list[SimResult], name: str) -> SimResult:
        return next(r for r in results if r.policy == name)


def run_benchmark(trace: Trace, jobs: int, seed: int) -> Report:
    drawn = make_jobs(trace, jobs, seed)
    gpus = sum(1 for d in trace.devices if d.kind == "cuda") or len(trace.devices)
    saturation = [simulate(trace, p, drawn) for p in policies(trace)]
    pocket = saturation[0]
    rate = trace.offered_load * jobs / pocket.makespan
    arriving = with_poisson_arrivals(drawn, rate, seed + 1)
    loaded = [simulate(trace, p, arriving) for p in policies(trace)]
    return Report(trace, jobs, seed, lower_bound(drawn, trace.models, gpus), saturation, rate, loaded)


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):,.0f}" if values else "-"


def format_report(rep: Report) -> str:
    t = rep.trace
    bound, run, loads, longest = rep.bound
    gpus = sum(1 for d in t.devices if d.kind == "cuda") or len(t.devices)
    lines = [f"pocket3d scheduler benchmark: {t.path}, {rep.jobs} jobs, seed {rep.seed}",
             "devices: " + ", ".join(f"{d.id} {d.budget_mb / GB:g} GB" for d in t.devices)
             + f"; {t.devices[0].slots} stage(s) computing at a time per device",
             "mix: " + ", ".join(f"{p.name} {p.share:.0%}" for p in t.pipelines), ""]
    pocket, static, serial = (rep.by_policy(rep.saturation, n) for n in ("pocket3d", "static pinning",
                                                                        "serial FIFO"))
    lines += [f"Saturation: all {rep.jobs} jobs queued at t=0",
              f"lower bound {bound:,.0f} s = max((total run {run:,.0f} s + one load per model {loads:,.0f} s) / "
              f"{gpus} GPUs, longest pipeline {longest:,.0f} s)",
              f"{'policy':<16}{'makespan s':>12}{'LB/makespan':>13}{'jobs/h':>9}{'vs serial':>11}{'vs static':>11}"
              f"{'loads':>7}{'evictions':>11}{'GPU busy':>10}"]
    for r in rep.saturation:
        lines.append(f"{r.policy:<16}{r.makespan:>12,.0f}{bound / r.makespan:>13.3f}"
                     f"{rep.jobs / r.makespan * 3600:>9.1f}{serial.makespan / r.makespan:>10.2f}x"
                     f"{static.makespan / r.makespan:>10.2f}x{r.loads:>7}{r.evictions:>11}"
                     f"{r.busy_share('cuda'):>9.1%}")
    lines += ["", f"Offered load: Poisson arrivals at {rep.rate:.4f} jobs/s ({rep.rate * 3600:.1f} jobs/h = "
              f"{t.offered_load:.2f} x pocket3d's saturation throughput), the same arrivals for every policy",
              f"{'policy':<16}{'feature':<20}{'jobs':>6}{'p50 s':>9}{'p95 s':>9}"]
    for r in rep.loaded:
        for feature in FEATURES:
            lat = r.latencies(feature)
            if lat:
                lines.append(f"{r.policy:<16}{feature:<20}{len(lat):>6}{_pct(lat, 50):>9}{_pct(lat, 95):>9}")
        lat = r.latencies()
        lines.append(f"{r.policy:<16}{'all':<20}{len(lat):>6}{_pct(lat, 50):>9}{_pct(lat, 95):>9}")
    lines += ["", f"{'policy':<16}{'loads':>7}{'evictions':>11}{'idle unloads':>14}{'GPU busy':>10}"
              f"{'last job done s':>17}"]
    for r in rep.loaded:
        lines.append(f"{r.policy:<16}{r.loads:>7}{r.evictions:>11}{r.idle_unloads:>14}{r.busy_share('cuda'):>9.1%}"
                     f"{r.end:>17,.0f}")
    ratio = bound / pocket.makespan
    vs_serial, vs_static = serial.makespan / pocket.makespan, static.makespan / pocket.makespan
    lines += ["", "Goals (saturation): "
              f"LB/makespan {ratio:.3f} (goal >= 0.9: {'met' if ratio >= 0.9 else 'MISSED'}); "
              f"throughput {vs_serial:.2f}x serial FIFO (goal >= 3: {'met' if vs_serial >= 3 else 'MISSED'}); "
              f"{vs_static:.2f}x static pinning (goal >= 1.5: {'met' if vs_static >= 1.5 else 'MISSED'})"]
    return "\n".join(lines)


def plot(rep: Report, path: Path) -> None:
    """Device memory in use and compute-busy periods over time, for the pocket3d policy in both scenarios."""
    import matplotlib  # an optional extra (pip install pocket3d[bench]): imported only when a plot is asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [("saturation", rep.by_policy(rep.saturation, "pocket3d")),
            (f"{rep.trace.offered_load:.0%} offered load", rep.by_policy(rep.loaded, "pocket3d"))]
    devices = rep.trace.devices
    names = sorted(rep.trace.models)
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(names)}
    fig, axes = plt.subplots(len(devices), len(runs), figsize=(8 * len(runs), 2.2 * len(devices)), squeeze=False,
                             sharex="col")
    for col, (title, result) in enumerate(runs):
        for row, d in enumerate(devices):
            ax = axes[row][col]
            times, used = zip(*result.memory[d.id], strict=True)
            budget = d.budget_mb / GB
            ax.step(list(times) + [result.end], [u / GB for u in used] + [used[-1] / GB], where="post",
                    color="black", linewidth=0.8, label="memory in use")
            ax.axhline(budget, color="grey", linestyle=":", linewidth=0.8)
            strip = (-0.22 * budget, 0.16 * budget)
            for m in names:
                spans = [(s.compute_start, s.end - s.compute_start) for s in result.stages
                         if s.device_id == d.id and s.model_id == m and s.end is not None]
                if spans:
                    ax.broken_barh(spans, strip, facecolors=colors[m], linewidth=0)
            ax.set_ylim(-0.25 * budget, budget * 1.05)
            ax.set_ylabel(f"{d.id}\nGB")
            if row == 0:
                ax.set_title(f"pocket3d, {title}: memory (line) and stages computing (bars)")
        axes[-1][col].set_xlabel("simulated seconds")
    handles = [matplotlib.patches.Patch(color=colors[m], label=m) for m in names]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pocket3d bench scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, required=True, help="trace YAML (bench/scheduler/reference.yaml)")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of device memory and busy time")
    parser.add_argument("--seed", type=int, default=None, help="seed of the job draw (default: the trace's)")
    parser.add_argument("--jobs", type=int, default=None, help="number of jobs (default: the trace's)")
    args = parser.parse_args(argv)
    try:
        trace = load_trace(args.trace)
    except TraceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs = args.jobs if args.jobs is not None else trace.jobs
    if jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    rep = run_benchmark(trace, jobs, args.seed if args.seed is not None else trace.seed)
    print(format_report(rep))
    if args.plot is not None:
        plot(rep, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
