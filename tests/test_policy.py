"""The scheduling policy as pure functions with an injected clock, and under the discrete-event simulator."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pocket3d.scheduler.policy import (
    Assignment, DeviceView, LruEviction, ModelProfile, PendingStage, PlacementPolicy, ReloadCostEviction,
    RemainingWorkOrdering, ResidentModel, SchedulingPolicy, UsageStats, idle_unloads, plan,
    pocket3d_policy, preload_placement, serial_fifo_policy, shortest_remaining_work_policy, static_pinning_policy)
from pocket3d.scheduler.simulator import SimDevice, SimJob, SimStage, Simulator

WEIGHTS = {"mesh_generation": 1.0, "texture_generation": 0.8, "segmentation": 0.6, "auto_rigging": 0.4}
NOW = 10_000.0


def profile(model_id: str, memory_mb: float, load: float = 20.0, run: float = 10.0, **kw) -> ModelProfile:
    return ModelProfile(model_id, memory_mb, load, run, **kw)


def idle(model_id: str, memory_mb: float, last_used: float = NOW - 5) -> ResidentModel:
    return ResidentModel(model_id, memory_mb, running=0, last_used=last_used, loaded_at=last_used - 100)


def busy(model_id: str, memory_mb: float, since: float = NOW - 1) -> ResidentModel:
    return ResidentModel(model_id, memory_mb, running=1, last_used=since, loaded_at=since - 100,
                         running_since=(since,))


def device(device_id: str, budget_mb: float, *resident: ResidentModel, slots: int | None = 1) -> DeviceView:
    return DeviceView(device_id, "cuda", budget_mb, {r.model_id: r for r in resident}, slots=slots)


def stage(stage_id: int, model_id: str, *, feature: str = "mesh_generation", priority: int = 0,
          submitted_at: float = NOW, ready_at: float | None = None, later: tuple[str, ...] = ()) -> PendingStage:
    return PendingStage(stage_id, f"job{stage_id}", model_id, feature, priority, submitted_at, ready_at, later)


def apply_checked(devices: list[DeviceView], models: dict[str, ModelProfile], assignments: list[Assignment]) -> None:
    """Replays assignments the way a mechanism would, asserting every invariant plan() promises."""
    state = {d.id: dict(d.resident) for d in devices}
    budget = {d.id: d.budget_mb for d in devices}
    seen = set()
    for a in assignments:
        assert a.stage.stage_id not in seen, "a stage assigned twice"
        seen.add(a.stage.stage_id)
        resident = state[a.device_id]
        for victim in a.evict:
            r = resident.pop(victim)
            assert r.running == 0 and not r.loading, f"evicted {victim} while it had stages"
            assert not models[victim].pinned, f"evicted pinned {victim}"
        m = models[a.stage.model_id]
        if a.load:
            assert m.id not in resident, "loaded where already resident"
            resident[m.id] = ResidentModel(m.id, m.memory_mb, 1, NOW, NOW, loading=True)
        else:
            assert m.id in resident and not resident[m.id].loading, "ran where not loaded"
            r = resident[m.id]
            assert r.running < m.max_concurrent, f"{m.id}'s copy on {a.device_id} over max_concurrent"
            resident[m.id] = ResidentModel(m.id, r.memory_mb, r.running + 1, r.last_used, r.loaded_at)
        used = sum(r.memory_mb for r in resident.values())
        assert used <= budget[a.device_id] + 1e-6, f"{a.device_id} oversubscribed: {used} > {budget[a.device_id]}"


def random_state(rng: random.Random) -> tuple[list[DeviceView], dict[str, ModelProfile], list[PendingStage]]:
    models = {}
    for i in range(rng.randint(3, 8)):
        models[f"m{i}"] = profile(f"m{i}", rng.choice([500, 2000, 6000, 12000, 20000]), rng.uniform(1, 60),
                                  rng.uniform(1, 90), max_concurrent=rng.randint(1, 3), pinned=rng.random() < 0.15)
    devices = []
    for j in range(rng.randint(1, 4)):
        budget = rng.choice([8000, 16000, 24000, 48000])
        resident, used = [], 0.0
        for m in rng.sample(list(models.values()), k=rng.randint(0, len(models))):
            if used + m.memory_mb > budget:
                continue
            used += m.memory_mb
            state = rng.random()
            if state < 0.3:
                resident.append(busy(m.id, m.memory_mb, since=NOW - rng.uniform(0, 100)))
            elif state < 0.4:
                resident.append(ResidentModel(m.id, m.memory_mb, 1, NOW - 3, NOW - 3, loading=True))
            else:
                resident.append(idle(m.id, m.memory_mb, last_used=NOW - rng.uniform(0, 3000)))
        devices.append(device(f"cuda:{j}", budget, *resident, slots=rng.choice([1, 2, None])))
    pending = [stage(k, rng.choice(list(models)), feature=rng.choice(list(WEIGHTS)),
                     priority=rng.randint(-10, 10), submitted_at=NOW - rng.uniform(0, 2000),
                     later=tuple(rng.sample(list(models), rng.randint(0, 2))))
               for k in range(rng.randint(0, 30))]
    return devices, models, pending


def test_plan_never_oversubscribes_evicts_busy_or_pinned_models_or_exceeds_max_concurrent(
        caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(20240611)
    placed = 0
    for _ in range(400):
        devices, models, pending = random_state(rng)
        stats = UsageStats()
        for s in pending:
            stats.record_request(s.model_id, s.submitted_at)
        policies = [pocket3d_policy(WEIGHTS, max_wait=rng.choice([1.0, 600.0])), shortest_remaining_work_policy(),
                    serial_fifo_policy(),
                    static_pinning_policy(models, [device(d.id, d.budget_mb) for d in devices])
                    if sum(m.memory_mb for m in models.values()) <= min(d.budget_mb for d in devices) else None]
        for policy in filter(None, policies):
            assignments = plan(pending, devices, models, stats, NOW, policy)
            apply_checked(devices, models, assignments)
            placed += len(assignments)
    assert placed > 500, "the random states hardly ever allowed a placement: the property was not exercised"
    refused = [r.getMessage() for r in caplog.records if "refused assignment" in r.getMessage()]
    assert not refused, f"the policies proposed what plan() had to refuse: {refused[:3]}"


def test_random_traces_run_to_completion_under_the_simulators_checks() -> None:
    rng = random.Random(7)
    for trial in range(6):
        models = {f"m{i}": profile(f"m{i}", rng.choice([1000, 4000, 8000, 14000]), rng.uniform(1, 20),
                                   rng.uniform(1, 30), max_concurrent=rng.randint(1, 3)) for i in range(5)}
        devices = [SimDevice(f"cuda:{j}", "cuda", rng.choice([16000, 24000]), slots=rng.choice([1, 2, None]))
                   for j in range(rng.randint(1, 3))]
        jobs = [SimJob(f"j{k}", rng.choice(list(WEIGHTS)),
                       tuple(SimStage(m, models[m].run_seconds * rng.uniform(0.5, 1.5))
                             for m in rng.sample(list(models), rng.randint(1, 3))),
                       submitted_at=rng.uniform(0, 600), priority=rng.randint(-10, 10)) for k in range(40)]
        result = Simulator(devices, models, pocket3d_policy(WEIGHTS), idle_timeout=60).run(jobs)
        assert len(result.finished) == len(jobs), f"trial {trial}"
        for d in devices:
            assert max(used for _, used in result.memory[d.id]) <= d.budget_mb + 1e-6


def test_a_resident_model_is_reused_rather_than_loaded_again() -> None:
    models = {"shape": profile("shape", 6000)}
    devices = [device("cuda:0", 24000), device("cuda:1", 24000, idle("shape", 6000))]
    [a] = plan([stage(1, "shape")], devices, models, UsageStats(), NOW, pocket3d_policy(WEIGHTS))
    assert (a.device_id, a.load, a.evict) == ("cuda:1", False, ())

    # Under the simulator, a hundred stages of one model load it once per instance, not once per stage.
    jobs = [SimJob(f"j{k}", "mesh_generation", (SimStage("shape", 10.0),), submitted_at=k * 12.0) for k in range(100)]
    result = Simulator([SimDevice("cuda:0", "cuda", 24000)], models, pocket3d_policy(WEIGHTS)).run(jobs)
    assert result.loads == 1


def test_a_stage_waits_for_its_busy_instance_when_that_is_sooner_than_loading_another() -> None:
    models = {"paint": profile("paint", 16000, load=30.0, run=85.0)}
    almost_done = [device("cuda:0", 24000, busy("paint", 16000, since=NOW - 80)), device("cuda:1", 24000)]
    assert plan([stage(1, "paint")], almost_done, models, UsageStats(), NOW, pocket3d_policy(WEIGHTS)) == []

    just_started = [device("cuda:0", 24000, busy("paint", 16000, since=NOW - 1)), device("cuda:1", 24000)]
    [a] = plan([stage(1, "paint")], just_started, models, UsageStats(), NOW, pocket3d_policy(WEIGHTS))
    assert (a.device_id, a.load) == ("cuda:1", True)


def test_eviction_weighs_reload_cost_and_reuse_per_mb_where_lru_evicts_the_wrong_model() -> None:
    # "sam3d" was used longest ago but takes a minute to load and is asked for every few minutes; "rembg"
    # was used a moment ago, loads in 2 s and is rarely asked for. Making room for "unirig" should cost
    # the cheap one.
    models = {"sam3d": profile("sam3d", 8000, load=60.0), "rembg": profile("rembg", 8000, load=2.0),
              "unirig": profile("unirig", 8000, load=20.0)}
    stats = UsageStats()
    for t in range(0, 3600, 200):
        stats.record_request("sam3d", NOW - 3600 + t)
    stats.record_request("rembg", NOW - 3000)
    dev = device("cuda:0", 16000, idle("sam3d", 8000, last_used=NOW - 900), idle("rembg", 8000, last_used=NOW - 10))

    assert LruEviction().victims(dev, 8000, models, stats, NOW) == ["sam3d"]
    assert ReloadCostEviction().victims(dev, 8000, models, stats, NOW) == ["rembg"]
    [a] = plan([stage(1, "unirig")], [dev], models, stats, NOW, pocket3d_policy(WEIGHTS))
    assert a.evict == ("rembg",) and a.load


def test_eviction_frees_only_what_is_needed_and_says_when_it_cannot() -> None:
    models = {m: profile(m, mb) for m, mb in (("a", 2000), ("b", 2000), ("big", 12000))}
    dev = device("cuda:0", 16000, idle("a", 2000), idle("b", 2000), idle("big", 12000))
    assert ReloadCostEviction().victims(dev, 3000, models, UsageStats(), NOW) in (["a", "b"], ["big"])
    assert ReloadCostEviction().victims(dev, 1500, models, UsageStats(), NOW) in (["a"], ["b"])
    assert ReloadCostEviction().victims(dev, 17000, models, UsageStats(), NOW) is None


def test_pinned_and_running_models_are_never_evicted_even_for_a_starving_stage() -> None:
    models = {"pinned": profile("pinned", 8000, pinned=True), "running": profile("running", 8000),
              "spare": profile("spare", 4000), "big": profile("big", 10000)}
    dev = device("cuda:0", 24000, idle("pinned", 8000, last_used=NOW - 5000), busy("running", 8000),
                 idle("spare", 4000), slots=None)
    old = stage(1, "big", submitted_at=0.0, ready_at=0.0)  # waited far past starvation_seconds
    for policy in (pocket3d_policy(WEIGHTS), serial_fifo_policy()):
        assert plan([old], [dev], models, UsageStats(), NOW, policy) == []
    # 4 GB fit once "spare" goes: that much it may do.
    models["small"] = profile("small", 8000)
    [a] = plan([stage(2, "small")], [dev], models, UsageStats(), NOW, pocket3d_policy(WEIGHTS))
    assert a.evict == ("spare",)
    assert ReloadCostEviction().victims(dev, 8000, models, UsageStats(), NOW) is None
    assert LruEviction().victims(dev, 8000, models, UsageStats(), NOW) is None


def test_max_concurrent_is_per_copy_and_a_flooded_model_gets_a_copy_on_every_device() -> None:
    models = {"m": profile("m", 1000, max_concurrent=2)}
    devices = [device(f"cuda:{i}", 24000, slots=None) for i in range(3)]
    pending = [stage(k, "m") for k in range(10)]
    out = plan(pending, devices, models, UsageStats(), NOW, pocket3d_policy(WEIGHTS))
    # one load per device (one copy each), and no stage beyond a copy's two
    assert sorted(a.device_id for a in out if a.load) == ["cuda:0", "cuda:1", "cuda:2"]
    devices = [device(f"cuda:{i}", 24000, idle("m", 1000), slots=None) for i in range(3)]
    devices[2] = device("cuda:2", 24000, busy("m", 1000), slots=None)
    out = plan(pending, devices, models, UsageStats(), NOW, pocket3d_policy(WEIGHTS))
    assert Counter(a.device_id for a in out) == {"cuda:0": 2, "cuda:1": 2, "cuda:2": 1}
    apply_checked(devices, models, out)


def test_a_busy_copy_sends_the_next_stage_to_a_replica_unless_it_frees_sooner_than_a_load() -> None:
    models = {"cpu-model": profile("cpu-model", 1000, run=100.0, device_kinds=("cpu",))}
    devices = [DeviceView("cpu:0", "cpu", 8000, {"cpu-model": busy("cpu-model", 1000, since=NOW - 1)}),
               DeviceView("cpu:1", "cpu", 8000, {})]
    [a] = plan([stage(1, "cpu-model")], devices, models, UsageStats(), NOW, pocket3d_policy(WEIGHTS))
    assert (a.device_id, a.load) == ("cpu:1", True)
    # Its copy ends within the load time of another: the stage waits for it rather than loading.
    devices[0] = DeviceView("cpu:0", "cpu", 8000, {"cpu-model": busy("cpu-model", 1000, since=NOW - 95)})
    assert plan([stage(1, "cpu-model")], devices, models, UsageStats(), NOW, pocket3d_policy(WEIGHTS)) == []


def test_a_flooded_model_runs_on_both_devices_under_the_simulator_within_their_memory() -> None:
    models = {"paint": profile("paint", 16000, load=30.0, run=60.0), "shape": profile("shape", 6000, load=20.0)}
    jobs = [SimJob(f"j{k}", "texture_generation", (SimStage("paint", 60.0),)) for k in range(20)]
    devices = [SimDevice("cuda:0", "cuda", 24000), SimDevice("cuda:1", "cuda", 24000)]
    result = Simulator(devices, models, pocket3d_policy(WEIGHTS)).run(jobs)
    assert {s.device_id for s in result.stages} == {"cuda:0", "cuda:1"}
    assert result.makespan < 20 * 60 / 2 + 2 * 30 + 1  # the two copies shared the work evenly
    for d in devices:
        assert max(used for _, used in result.memory[d.id]) <= d.budget_mb


def test_the_size_aware_order_puts_the_job_closest_to_done_first_and_keeps_priorities_and_the_bound() -> None:
    models = {"rembg": profile("rembg", 1000, run=1.0), "shape": profile("shape", 6000, run=17.0),
              "paint": profile("paint", 16000, run=85.0), "rig": profile("rig", 8000, run=10.0)}
    ordering = RemainingWorkOrdering(WEIGHTS, ageing_seconds=120, urgent_after=600)
    textured = stage(1, "rembg", later=("shape", "paint"))  # 103 s to go
    rig = stage(2, "rig", feature="segmentation")  # 10 s to go, weight 0.6
    painting = stage(3, "paint")  # 85 s to go
    assert [s.stage_id for s in ordering.order([textured, rig, painting], NOW, models)] == [2, 3, 1]
    # a priority step of 5 doubles a stage's claim; ten of them outweigh an 8x larger job
    urgent_textured = stage(4, "rembg", priority=10, later=("shape", "paint"))
    assert ordering.order([painting, urgent_textured], NOW, models)[0] is urgent_textured
    # ageing lets the old overtake the new...
    old_textured = stage(5, "rembg", submitted_at=NOW - 500, later=("shape", "paint"))
    assert ordering.order([painting, old_textured], NOW, models)[0] is old_textured
    # ...and past the bound, the longest wait goes first whatever its size and priority
    overdue = stage(6, "paint", feature="auto_rigging", priority=-10, submitted_at=NOW - 700, ready_at=NOW - 650)
    assert ordering.order([rig, urgent_textured, overdue], NOW, models)[0] is overdue


def test_a_low_priority_job_under_a_stream_of_high_priority_short_jobs_starts_within_the_bound() -> None:
    # One GPU that holds one model at a time. Short high-priority stages arrive every 4 s for 40 minutes (a
    # 5 s stage: the small model always has stages waiting). Without the bound the large low-priority stage
    # waits for the stream to end: by remaining work and priority it ranks last at every tick, and the
    # device never runs out of small work to batch.
    models = {"small": profile("small", 12000, load=5.0, run=5.0), "large": profile("large", 16000, load=5.0, run=60.0)}
    stream = [SimJob(f"s{k}", "mesh_generation", (SimStage("small", 5.0),), submitted_at=k * 4.0, priority=10)
              for k in range(600)]
    large = SimJob("large", "auto_rigging", (SimStage("large", 60.0),), submitted_at=30.0, priority=-10)
    bound = 300.0
    result = Simulator([SimDevice("gpu", "cuda", 20000)], models, pocket3d_policy(WEIGHTS, max_wait=bound)).run(
        stream + [large])
    [record] = [s for s in result.stages if s.job_id == "large"]
    # it goes first once it has waited `bound`; then the small stage running there ends and the large loads
    assert record.compute_start - record.ready_at <= bound + 5.0 + 5.0 + 1.0
    assert len(result.finished) == len(stream) + 1
    # without the bound it waits far longer (what the bound is for)
    unbounded = Simulator([SimDevice("gpu", "cuda", 20000)], models, pocket3d_policy(WEIGHTS, max_wait=1e9)).run(
        stream + [large])
    [late] = [s for s in unbounded.stages if s.job_id == "large"]
    assert late.compute_start - late.ready_at > 3 * bound


def test_a_device_finishes_its_batch_before_switching_models_even_when_every_stage_is_old() -> None:
    # Two 24 GB cards, three models that never fit beside each other, every job queued at once and waiting far
    # past max_wait: stages of all three models are old, yet a card switches only after a batch that pays its
    # load back many times, so loading stays a small share of the device time.
    models = {"shape": profile("shape", 10240, load=25.0, run=30.0), "paint": profile("paint", 21504, load=35.0, run=60.0),
              "trellis2": profile("trellis2", 24576, load=40.0, run=17.0)}
    rng = random.Random(3)
    jobs = []
    for k in range(120):
        kind = rng.choice(["textured", "textured", "trellis2"])
        stages = (SimStage("shape", 30.0), SimStage("paint", 60.0)) if kind == "textured" else (SimStage("trellis2", 17.0),)
        jobs.append(SimJob(f"j{k}", "mesh_generation", stages))
    devices = [SimDevice("cuda:0", "cuda", 24576), SimDevice("cuda:1", "cuda", 24576)]
    result = Simulator(devices, models, pocket3d_policy(WEIGHTS, max_wait=300.0)).run(jobs)
    assert result.loading_share() < 0.10, (result.loads, result.loading_share())
    assert result.loads < 15


def test_idle_unloads_honour_the_timeout_and_never_touch_pinned_running_or_loading_models() -> None:
    models = {m: profile(m, 1000, pinned=(m == "pinned")) for m in ("stale", "fresh", "pinned", "running", "loading")}
    dev = device("cuda:0", 24000, idle("stale", 1000, last_used=NOW - 700), idle("fresh", 1000, last_used=NOW - 30),
                 idle("pinned", 1000, last_used=NOW - 9000), busy("running", 1000, since=NOW - 9000),
                 ResidentModel("loading", 1000, 1, NOW - 9000, NOW - 9000, loading=True))
    assert idle_unloads([dev], models, NOW, idle_timeout=600) == [("cuda:0", "stale")]
    assert idle_unloads([dev], models, NOW, idle_timeout=20) == [("cuda:0", "stale"), ("cuda:0", "fresh")]
    assert idle_unloads([dev], models, NOW, idle_timeout=None) == []


def test_plan_refuses_an_assignment_that_would_oversubscribe_whatever_the_placement_policy_says() -> None:
    class Greedy(PlacementPolicy):
        def place(self, stage, model, devices, models, stats, now, context=None):  # noqa: ANN001, ANN201
            return Assignment(stage, devices[0].id, (), load=True)

    models = {"a": profile("a", 10000), "b": profile("b", 10000)}
    policy = SchedulingPolicy("greedy", RemainingWorkOrdering(WEIGHTS), Greedy(), LruEviction())
    assignments = plan([stage(1, "a"), stage(2, "b")], [device("cuda:0", 16000)], models, UsageStats(), NOW, policy)
    assert [a.stage.model_id for a in assignments] == ["a"]


def test_baselines_keep_to_their_rules() -> None:
    models = {"a": profile("a", 8000), "b": profile("b", 8000)}
    devices = [device("cuda:0", 16000), device("cuda:1", 24000)]
    # Serial FIFO: one stage in flight, on the largest device, oldest job first.
    out = plan([stage(1, "a", submitted_at=NOW - 1), stage(2, "b", submitted_at=NOW - 2)], devices, models,
               UsageStats(), NOW, serial_fifo_policy())
    assert [(a.stage.stage_id, a.device_id) for a in out] == [(2, "cuda:1")]
    # Static pinning: each model on its own device only.
    static = static_pinning_policy(models, devices)
    out = plan([stage(1, "a"), stage(2, "b"), stage(3, "a")], devices, models, UsageStats(), NOW, static)
    assert len({a.device_id for a in out}) == 2 and len(out) == 2
    with pytest.raises(ValueError, match="fits on no device"):
        static_pinning_policy({"huge": profile("huge", 30000)}, devices)


def test_preloads_go_largest_first_where_most_room_is_left_and_skip_what_fits_nowhere() -> None:
    wanted = [profile("paint", 16000), profile("shape", 6000), profile("rembg", 1000, device_kinds=("cuda", "cpu")),
              profile("huge", 90000), profile("resident", 2000)]
    devices = [device("cuda:0", 24000), device("cuda:1", 48000, idle("resident", 2000)),
               DeviceView("cpu", "cpu", 8000, {})]
    placed = preload_placement(wanted, devices)
    assert placed == [("cuda:1", "paint"), ("cuda:1", "shape"), ("cuda:0", "rembg")]
    # nothing promised beyond a budget, nothing loaded twice
    for d in devices:
        assert sum(m.memory_mb for m in wanted if (d.id, m.id) in placed) <= d.free_mb
