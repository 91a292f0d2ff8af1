"""The scheduler benchmark: pocket3d's policy against baselines under simulated time, on each trace and seed.

    pocket3d bench scheduler [--trace T.yaml ...] [--seed N | --seeds 1,2,3] [--jobs N] [--plot PNG]
    .venv/bin/python bench/scheduler/run.py ... (the same)

Without ``--trace`` it runs every trace shipped in bench/scheduler/. A trace (see reference.yaml) names the
devices, the model profiles, the job mix, its seeds and its goals; the jobs are drawn from the mix with each
seed. Every policy runs in :mod:`pocket3d.scheduler.simulator`, which calls the real ``plan()``, in two
scenarios:

* saturation: every job queued at t=0. Reported: the makespan against a lower bound (below), throughput and
  its ratio to the baselines, loads, evictions, the devices' busy share and the share of device time spent
  loading.
* offered load: arrivals at ``offered_load`` (0.85) x the pocket3d policy's saturation throughput (Poisson, or
  in bursts where the trace says so), the same arrivals for every policy. Reported: p50 and p95 job latency
  per feature and per priority, loads, evictions, idle unloads, busy and loading shares. A policy slower than
  the offered rate builds a queue that only ends with the trace, which its latencies show.

Policies: pocket3d; shortest work (shortest expected remaining work of the job first, with ageing, on the
same placement, no priorities or weights); static pinning (each model fixed up front to one device, FIFO per
device: the ProtoScale seed); serial FIFO (one stage in flight on the node, on its largest device: the seed
design's queue loop). At offered load also the FIFO floor: FIFO on any free device with memory and loads
taken away, what no placement can beat at that order.

The lower bound ignores memory limits but not where models fit: the largest of (a) for every set of devices,
the run seconds of the models that fit on no other device over those devices' compute slots, plus the
shortest load any of those models needs before its first stage; (b) per model, its first load plus its run
seconds over the stages its copies can compute at once (a copy per device it fits on, each taking
min(max_concurrent, the device's slots)); (c) the longest pipeline after the load of its first model.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from pocket3d.scheduler.policy import (
    DeviceView, ModelProfile, SchedulingPolicy, fifo_floor_policy, pocket3d_policy, serial_fifo_policy,
    shortest_remaining_work_policy, static_pinning_policy)
from pocket3d.scheduler.simulator import SimDevice, SimJob, SimResult, SimStage, Simulator

GB = 1024.0  # MB
FEATURES = ("mesh_generation", "texture_generation", "segmentation", "auto_rigging")
HERE = Path(__file__).resolve().parent
POCKET3D, SHORTEST, STATIC, SERIAL, FLOOR = "pocket3d", "shortest work", "static pinning", "serial FIFO", "FIFO floor"
# What a goal in a trace may name: scenario.metric
METRICS = {
    "saturation.lb_ratio": "lower bound / makespan",
    "saturation.vs_serial": "throughput / serial FIFO's",
    "saturation.vs_static": "throughput / static pinning's",
    "saturation.loading_share": "share of device time loading",
    "load.p95_vs_floor": "p95 latency / the FIFO floor's",
    "load.loads_vs_saturation": "loads / loads at saturation",
    "load.loading_share": "share of device time loading",
}


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class Pipeline:
    name: str
    feature: str
    stages: tuple[str, ...]
    share: float


@dataclass(frozen=True)
class Goal:
    metric: str  # a key of METRICS
    at_least: float | None = None
    at_most: float | None = None

    def met(self, value: float) -> bool:
        return (self.at_least is None or value >= self.at_least) and (self.at_most is None or value <= self.at_most)

    def describe(self) -> str:
        bound = f">= {self.at_least:g}" if self.at_least is not None else f"<= {self.at_most:g}"
        scenario = "saturation" if self.metric.startswith("saturation.") else "offered load"
        return f"{scenario}: {METRICS[self.metric]} {bound}"


@dataclass(frozen=True)
class Trace:
    path: Path
    name: str
    devices: list[SimDevice]
    models: dict[str, ModelProfile]
    pipelines: list[Pipeline]
    jobs: int
    seeds: tuple[int, ...]
    run_jitter: float
    priorities: dict[int, float]
    priority_weights: dict[str, float]
    idle_timeout: float | None
    offered_load: float
    burst_size: int = 1  # jobs arriving together at each arrival instant (1: Poisson arrivals)
    goals: tuple[Goal, ...] = ()
    switch_factor: float = 1.0  # pocket3d's (see policy.MemoryAwarePlacement): --switch-factor, to show the trade


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
        default_concurrency = int(raw.get("max_concurrent", 1))
        models = {name: ModelProfile(name, m["memory_gb"] * GB, float(m["load_s"]), float(m["run_s"]),
                                     int(m.get("max_concurrent", default_concurrency)), bool(m.get("pinned", False)),
                                     tuple(m.get("devices", ["cuda"])))
                  for name, m in raw["models"].items()}
        pipelines = [Pipeline(p["name"], p["feature"], tuple(p["stages"]), float(p["share"]))
                     for p in raw["pipelines"]]
        seeds = raw.get("seeds", [raw.get("seed", 1)])
        goals = tuple(Goal(str(g["metric"]), g.get("at_least"), g.get("at_most")) for g in raw.get("goals") or ())
        arrivals = raw.get("arrivals") or {}
        trace = Trace(Path(path), str(raw.get("name", Path(path).stem)), devices, models, pipelines,
                      int(raw.get("jobs", 1000)), tuple(int(s) for s in seeds), float(raw.get("run_jitter", 0.0)),
                      {int(k): float(v) for k, v in (raw.get("priorities") or {0: 1.0}).items()},
                      {str(k): float(v) for k, v in (raw.get("priority_weights") or {}).items()},
                      raw.get("model_idle_timeout"), float(raw.get("offered_load", 0.85)),
                      int(arrivals.get("burst_size", 1)), goals)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TraceError(f"{path}: malformed trace ({type(e).__name__}: {e})") from None
    for p in trace.pipelines:
        missing = [s for s in p.stages if s not in trace.models]
        if missing:
            raise TraceError(f"{path}: pipeline {p.name} uses unknown models {missing}")
    for m in trace.models.values():
        if not any(d.kind in m.device_kinds and d.budget_mb >= m.memory_mb for d in trace.devices):
            raise TraceError(f"{path}: {m.id} ({m.memory_mb / GB:.0f} GB) fits on no device")
    for g in trace.goals:
        if g.metric not in METRICS or (g.at_least is None) == (g.at_most is None):
            raise TraceError(f"{path}: goal {g.metric!r} needs a metric of {sorted(METRICS)} and one of "
                             "at_least, at_most")
    if not trace.devices or not trace.pipelines or sum(p.share for p in trace.pipelines) <= 0:
        raise TraceError(f"{path}: needs devices, pipelines and positive shares")
    if trace.burst_size < 1 or not trace.seeds:
        raise TraceError(f"{path}: arrivals.burst_size must be at least 1 and seeds not empty")
    return trace


def shipped_traces() -> list[Path]:
    """The traces in bench/scheduler/, the reference first."""
    return sorted(HERE.glob("*.yaml"), key=lambda p: (p.stem != "reference", p.stem))


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


def with_arrivals(jobs: Sequence[SimJob], rate: float, seed: int, burst_size: int = 1) -> list[SimJob]:
    """Jobs arriving at ``rate`` per second on average: Poisson, or ``burst_size`` at once at Poisson instants."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for i, job in enumerate(jobs):
        out.append(replace(job, submitted_at=t))
        if (i + 1) % burst_size == 0:
            t += rng.expovariate(rate / burst_size)
    return out


@dataclass(frozen=True)
class Bound:
    seconds: float
    why: str  # which term binds, in words


def lower_bound(jobs: Sequence[SimJob], models: dict[str, ModelProfile], devices: Sequence[SimDevice]) -> Bound:
    """The makespan no schedule can beat at saturation (see the module docstring); memory limits ignored."""
    def fits(m: ModelProfile, d: SimDevice) -> bool:
        return d.kind in m.device_kinds and d.budget_mb >= m.memory_mb - 1e-6

    work: dict[str, float] = {}
    for j in jobs:
        for s in j.stages:
            work[s.model_id] = work.get(s.model_id, 0.0) + s.run_seconds
    where = {m: frozenset(d.id for d in devices if fits(models[m], d)) for m in work}
    slots = {d.id: d.slots for d in devices}
    candidates = [Bound(max(models[j.stages[0].model_id].load_seconds + sum(s.run_seconds for s in j.stages)
                            for j in jobs), "the longest pipeline after its first load")]
    for m, seconds in work.items():
        copies = sum(min(models[m].max_concurrent, slots[d]) if slots[d] is not None else models[m].max_concurrent
                     for d in where[m])
        candidates.append(Bound(models[m].load_seconds + seconds / max(1, copies),
                                f"{m}: {seconds:,.0f} run s on {copies} cop{'y' if copies == 1 else 'ies'}"))
    ids = [d.id for d in devices]
    for size in range(1, len(ids) + 1) if len(ids) <= 12 else (len(ids),):
        for subset in itertools.combinations(ids, size):
            if any(slots[d] is None for d in subset):
                continue
            inside = [m for m in work if where[m] <= set(subset)]
            if not inside:
                continue
            total = sum(work[m] for m in inside)
            capacity = sum(slots[d] for d in subset)
            first = min(models[m].load_seconds for m in inside)
            label = "all devices" if size == len(ids) else "+".join(subset)
            candidates.append(Bound(first + total / capacity,
                                    f"{total:,.0f} run s of the models that fit only on {label} over {capacity} "
                                    f"slot{'s' if capacity > 1 else ''}, after a {first:g} s load"))
    return max(candidates, key=lambda b: b.seconds)


def device_views(devices: Sequence[SimDevice]) -> list[DeviceView]:
    return [DeviceView(d.id, d.kind, d.budget_mb, {}, slots=d.slots) for d in devices]


def policies(trace: Trace) -> list[SchedulingPolicy]:
    """pocket3d and the baselines; static pinning only where every model fits beside the others."""
    out = [pocket3d_policy(trace.priority_weights, switch_factor=trace.switch_factor), shortest_remaining_work_policy()]
    try:
        out.append(static_pinning_policy(trace.models, device_views(trace.devices)))
    except ValueError:
        pass
    return out + [serial_fifo_policy()]


def simulate(trace: Trace, policy: SchedulingPolicy, jobs: Sequence[SimJob]) -> SimResult:
    return Simulator(trace.devices, trace.models, policy, idle_timeout=trace.idle_timeout).run(jobs)


def simulate_floor(trace: Trace, jobs: Sequence[SimJob]) -> SimResult:
    """FIFO on any free device of the right kind, every model resident everywhere and nothing to load."""
    largest = max((d.slots or 1) for d in trace.devices)
    models = {k: replace(m, memory_mb=0.0, load_seconds=0.0, max_concurrent=max(largest, m.max_concurrent))
              for k, m in trace.models.items()}
    devices = [replace(d, budget_mb=math.inf) for d in trace.devices]
    return Simulator(devices, models, fifo_floor_policy()).run(jobs)


@dataclass
class Run:
    """One trace, one seed: both scenarios."""

    seed: int
    bound: Bound
    saturation: dict[str, SimResult]
    rate: float
    loaded: dict[str, SimResult]
    metrics: dict[str, float] = field(default_factory=dict)


def run_seed(trace: Trace, jobs: int, seed: int) -> Run:
    drawn = make_jobs(trace, jobs, seed)
    saturation = {p.name: simulate(trace, p, drawn) for p in policies(trace)}
    pocket = saturation[POCKET3D]
    rate = trace.offered_load * jobs / pocket.makespan
    arriving = with_arrivals(drawn, rate, seed + 1, trace.burst_size)
    loaded = {p.name: simulate(trace, p, arriving) for p in policies(trace)}
    loaded[FLOOR] = simulate_floor(trace, arriving)
    run = Run(seed, lower_bound(drawn, trace.models, trace.devices), saturation, rate, loaded)
    load = loaded[POCKET3D]
    run.metrics = {
        "saturation.lb_ratio": run.bound.seconds / pocket.makespan,
        "saturation.vs_serial": saturation[SERIAL].makespan / pocket.makespan,
        "saturation.vs_static": saturation[STATIC].makespan / pocket.makespan if STATIC in saturation else math.nan,
        "saturation.loading_share": pocket.loading_share(),
        "load.p95_vs_floor": float(np.percentile(load.latencies(), 95) / np.percentile(loaded[FLOOR].latencies(), 95)),
        "load.loads_vs_saturation": load.loads / max(1, pocket.loads),
        "load.loading_share": load.loading_share(),
    }
    return run


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):,.0f}" if values else "-"


def _p50_95(values: list[float]) -> str:
    return f"{_pct(values, 50)}/{_pct(values, 95)}" if values else "-"


def format_trace(trace: Trace, jobs: int, runs: Sequence[Run]) -> str:
    t = trace
    slots = sorted({d.slots for d in t.devices}, key=str)
    lines = [f"== {t.name}: {t.path.name}, {jobs} jobs, seed{'s' if len(runs) > 1 else ''} "
             + ", ".join(str(r.seed) for r in runs),
             "devices: " + ", ".join(f"{d.id} {d.budget_mb / GB:.4g} GB" for d in t.devices)
             + f"; {'/'.join(str(s) for s in slots)} stage(s) computing at a time per device",
             "models: " + ", ".join(f"{m.id} {m.memory_mb / GB:.3g} GB" + (f" x{m.max_concurrent}"
                                                                              if m.max_concurrent > 1 else "")
                                    for m in t.models.values()),
             "mix: " + ", ".join(f"{p.name} {p.share:.0%}" for p in t.pipelines)
             + (f"; arrivals in bursts of {t.burst_size}" if t.burst_size > 1 else ""), ""]
    lines.append(f"Saturation: all {jobs} jobs queued at t=0")
    for r in runs:
        lines.append(f"  seed {r.seed}: lower bound {r.bound.seconds:,.0f} s ({r.bound.why})")
    lines.append(f"{'policy':<16}{'seed':>5}{'makespan s':>12}{'LB/makespan':>13}{'jobs/h':>9}{'vs serial':>11}"
                 f"{'vs static':>11}{'loads':>7}{'evictions':>11}{'busy':>8}{'loading':>9}")
    for name in (POCKET3D, SHORTEST, STATIC, SERIAL):
        for r in (r for r in runs if name in r.saturation):
            res = r.saturation[name]
            lines.append(f"{name:<16}{r.seed:>5}{res.makespan:>12,.0f}{r.bound.seconds / res.makespan:>13.3f}"
                         f"{jobs / res.makespan * 3600:>9.1f}"
                         f"{r.saturation[SERIAL].makespan / res.makespan:>10.2f}x"
                         + (f"{r.saturation[STATIC].makespan / res.makespan:>10.2f}x" if STATIC in r.saturation
                            else f"{'-':>11}") + f"{res.loads:>7}{res.evictions:>11}"
                         f"{res.busy_share():>8.1%}{res.loading_share():>9.1%}")
    if not all(STATIC in r.saturation for r in runs):
        try:
            static_pinning_policy(t.models, device_views(t.devices))
        except ValueError as e:
            lines.append(f"(no {e})")
    lines += ["", f"Offered load: {t.offered_load:.2f} x pocket3d's saturation throughput, "
              + ("Poisson arrivals" if t.burst_size == 1 else f"bursts of {t.burst_size} at Poisson instants")
              + ", the same arrivals for every policy; job latency p50/p95 in seconds"]
    for r in runs:
        lines.append(f"  seed {r.seed}: {r.rate:.4f} jobs/s ({r.rate * 3600:.1f} jobs/h)")
    features = [f for f in FEATURES if any(j.feature == f for r in runs for j in r.loaded[FLOOR].jobs.values())]
    short = {"mesh_generation": "mesh", "texture_generation": "texture", "segmentation": "segment",
             "auto_rigging": "rig"}
    priorities = sorted(t.priorities, reverse=True)
    header = f"{'policy':<16}{'seed':>5}{'all':>15}" + "".join(f"{short.get(f, f):>15}" for f in features)
    header += "".join(f"{'prio ' + str(p):>15}" for p in priorities)
    lines.append(header)
    for name in (POCKET3D, SHORTEST, STATIC, SERIAL, FLOOR):
        for r in (r for r in runs if name in r.loaded):
            res = r.loaded[name]
            by_priority = {p: sorted(res.finished[j] - job.submitted_at for j, job in res.jobs.items()
                                     if job.priority == p and j in res.finished) for p in priorities}
            lines.append(f"{name:<16}{r.seed:>5}{_p50_95(res.latencies()):>15}"
                         + "".join(f"{_p50_95(res.latencies(f)):>15}" for f in features)
                         + "".join(f"{_p50_95(by_priority[p]):>15}" for p in priorities))
    lines += ["", f"{'policy':<16}{'seed':>5}{'loads':>7}{'evictions':>11}{'idle unloads':>14}{'busy':>8}"
              f"{'loading':>9}{'last job done s':>17}"]
    for name in (POCKET3D, SHORTEST, STATIC, SERIAL, FLOOR):
        for r in (r for r in runs if name in r.loaded):
            res = r.loaded[name]
            lines.append(f"{name:<16}{r.seed:>5}{res.loads:>7}{res.evictions:>11}{res.idle_unloads:>14}"
                         f"{res.busy_share():>8.1%}{res.loading_share():>9.1%}{res.end:>17,.0f}")
    if t.goals:
        lines += ["", f"Goals ({t.name})"]
        lines += format_goals(t, runs)
    return "\n".join(lines)


def format_goals(trace: Trace, runs: Sequence[Run]) -> list[str]:
    out = []
    for g in trace.goals:
        cells = []
        for r in runs:
            value = r.metrics[g.metric]
            cells.append(f"seed {r.seed} {value:.3f} {'met' if g.met(value) else 'MISSED'}")
        out.append(f"  {g.describe():<58}" + "; ".join(cells))
    return out


def plot(trace: Trace, run: Run, path: Path) -> None:
    """Device memory in use and compute-busy periods over time, for the pocket3d policy in both scenarios."""
    import matplotlib  # an optional extra (pip install pocket3d[bench]): imported only when a plot is asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [("saturation", run.saturation[POCKET3D]), (f"{trace.offered_load:.0%} offered load", run.loaded[POCKET3D])]
    devices = trace.devices
    names = sorted(trace.models)
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
                ax.set_title(f"pocket3d, {trace.name}, {title}: memory (line) and stages computing (bars)")
        axes[-1][col].set_xlabel("simulated seconds")
    handles = [matplotlib.patches.Patch(color=colors[m], label=m) for m in names]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seeds are integers separated by commas") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seed given")
    return seeds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pocket3d bench scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, action="append", default=None,
                        help="trace YAML (repeatable; default: every trace in bench/scheduler/)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write a PNG of device memory and busy time (the first trace and seed)")
    parser.add_argument("--seed", type=int, default=None, help="one seed of the job draw (default: the trace's)")
    parser.add_argument("--seeds", type=_seeds, default=None, help="seeds, comma-separated (default: the trace's)")
    parser.add_argument("--jobs", type=int, default=None, help="number of jobs (default: the trace's)")
    parser.add_argument("--switch-factor", type=float, default=1.0,
                        help="pocket3d's switch_factor: a copy is loaded only where a busy one would come free later "
                             "than this x (its load + the reloads its evictions cause); higher: fewer loads")
    parser.add_argument("--load-scale", type=float, default=1.0,
                        help="multiply every model's load time (0: loads take no time; what memory alone costs)")
    args = parser.parse_args(argv)
    try:
        traces = [load_trace(p) for p in (args.trace or shipped_traces())]
    except TraceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.switch_factor <= 0 or args.load_scale < 0:
        print("error: --switch-factor must be positive and --load-scale not negative", file=sys.stderr)
        return 2
    traces = [replace(t, switch_factor=args.switch_factor,
                      models={k: replace(m, load_seconds=m.load_seconds * args.load_scale) for k, m in t.models.items()})
              for t in traces]
    if args.jobs is not None and args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    summary = []
    for i, trace in enumerate(traces):
        jobs = args.jobs if args.jobs is not None else trace.jobs
        seeds = (args.seed,) if args.seed is not None else args.seeds or trace.seeds
        runs = [run_seed(trace, jobs, seed) for seed in seeds]
        print(("\n\n" if i else "") + format_trace(trace, jobs, runs), flush=True)
        if trace.goals:
            summary += [f"{trace.name}:"] + format_goals(trace, runs)
        if args.plot is not None and i == 0:
            plot(trace, runs[0], args.plot)
            print(f"plot: {args.plot}")
    if len(traces) > 1 and summary:
        print("\n\nGoals, every trace\n" + "\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
