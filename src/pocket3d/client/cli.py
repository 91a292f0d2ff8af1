"""The ``pocket3d`` CLI's client commands, on the SDK: generate, texture, segment, rig, jobs, files and webhooks.

They talk to a server over HTTP (``--url`` / ``POCKET3D_URL``, ``--api-key`` / ``POCKET3D_API_KEY``), follow the
job with a progress bar fed by its events, and download what it made. Exit status: 0 done, 1 the job or the
request failed (its code and message on stderr), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, get_args

import click

from pocket3d import formats
from pocket3d.api.schemas import ViewName, WebhookEventName

if TYPE_CHECKING:
    from rich.console import Console

    from pocket3d.api.schemas import OutputFormat
    from pocket3d.client import Client, Job, JobView
    from pocket3d.client._core import FeatureFilter, StatusFilter

P = ParamSpec("P")
R = TypeVar("R")

FORMATS = list(formats.KEEPS)
VIEW_NAMES: tuple[str, ...] = get_args(ViewName)
WEBHOOK_EVENTS: tuple[str, ...] = get_args(WebhookEventName)
INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C


class Failure(click.ClickException):
    """A request or a job that failed: its message on stderr, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """The SDK's errors as one line on stderr and exit status 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from pocket3d.client import APIError, JobFailed, Pocket3DError, Unauthorized

        try:
            return fn(*args, **kwargs)
        except JobFailed as e:
            raise Failure(f"job {e.job.job_id} failed: {e.code}: {e.message}") from None
        except APIError as e:
            hint = e.hint
            if isinstance(e, Unauthorized):
                hint = "pass the key with --api-key or POCKET3D_API_KEY" + (f" ({hint})" if hint else "")
            raise Failure(f"{e.code}: {e.message}" + (f"\nhint: {hint}" if hint else "")) from None
        except Pocket3DError as e:
            raise Failure(str(e)) from None

    return wrapper


def _server_options(fn: Callable[P, R]) -> Callable[P, R]:
    fn = click.option("--json", "as_json", is_flag=True, help="print the result as JSON on stdout")(fn)
    fn = click.option("--api-key", envvar="POCKET3D_API_KEY", default=None, show_envvar=True,
                      help="API key, when the server has auth on")(fn)
    fn = click.option("--url", envvar="POCKET3D_URL", default=None, show_envvar=True,
                      help="the server [default: http://127.0.0.1:8000]")(fn)
    return fn


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _job_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What every feature command takes besides its inputs."""
    options: list[Decorator] = [
        click.option("-o", "--output", "output", type=click.Path(path_type=Path), default=None,
                     help="where to save the result: a file (one per format, the suffix swapped), or a directory "
                          "for every output [default: here, named after the input: chair.png -> chair.glb]"),
        click.option("--format", "output_format", default="glb", show_default=True, metavar="FORMAT[,FORMAT…]",
                     help=f"output format(s), the model runs once: {', '.join(FORMATS)} (a rig: "
                          f"{', '.join(formats.formats_for('auto_rigging'))}; parts: "
                          f"{', '.join(formats.formats_for('segmentation'))})"),
        click.option("--model", "model_preference", default=None,
                     help="a model id, as GET /api/v1/system/models lists them"),
        click.option("--quality", type=click.Choice(["low", "medium", "high"]), default=None,
                     help="the model's quality preset [default: medium]"),
        click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None),
        click.option("--priority", type=click.IntRange(-10, 10), default=None, help="higher runs sooner"),
        click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="a model parameter (repeatable); the value is read as JSON when it parses"),
        click.option("--webhook-url", default=None, metavar="URL",
                     help="POST the job's end there, signed (`pocket3d webhooks secret` verifies it)"),
        click.option("--webhook-event", "webhook_events", multiple=True, type=click.Choice(WEBHOOK_EVENTS),
                     help="what --webhook-url hears (repeatable) [default: job.succeeded, job.failed, job.cancelled]"),
        click.option("--no-wait", is_flag=True, help="submit, print the job id and return"),
        _server_options,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


# -- feature commands ------------------------------------------------------------------------------------------
# Every option and local file is checked before the first request: a usage error exits 2 having sent nothing (no
# upload left behind, no wait on a server that is not there).

@click.command()
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--prompt", "text_prompt", default=None, help="text to make a mesh from (with or without images)")
@click.option("--view", "views", multiple=True, metavar="NAME=IMAGE",
              help="a named view instead of IMAGES (front, left: the object's own left, back, right; repeatable)")
@click.option("--target-faces", type=click.IntRange(100, 5_000_000), default=None,
              help="decimate the result to about this many faces")
@click.option("--no-texture", "texture", flag_value=False, default=None,
              help="the shape only, without colours or texture (a shape model's paint stage is skipped)")
@click.option("--view-renders", is_flag=True, default=None,
              help="also render the result from the front, left, back and right (saved beside the model)")
@_job_options
@_reports_errors
def generate(images: tuple[Path, ...], text_prompt: str | None, views: tuple[str, ...], target_faces: int | None,
             texture: bool | None, view_renders: bool | None, **opts: Any) -> None:
    """A textured mesh from IMAGES (one, or several views of one object) and/or --prompt.

    \b
      pocket3d generate chair.png -o chair.glb
      pocket3d generate --view front=f.png --view left=l.png --view back=b.png
      pocket3d generate --prompt "a red wooden chair" --format glb,fbx
    """
    if not images and not text_prompt and not views:
        raise click.UsageError("give one or more IMAGES (or --view NAME=IMAGE), or --prompt TEXT")
    inputs, named = [_local(path) for path in images], _named_views(views)
    fields = _fields(opts, target_faces=target_faces, texture=texture, view_renders=view_renders or None)
    _run(opts, lambda p3d: p3d.generate_mesh(
        images=[_sent(p3d, i) for i in inputs], views=_sent_views(p3d, named), text_prompt=text_prompt, **fields))


@click.command()
@click.argument("mesh", type=click.Path(path_type=Path))
@click.option("--image", "images", multiple=True, type=click.Path(path_type=Path),
              help="a reference image (repeatable)")
@click.option("--view", "views", multiple=True, metavar="NAME=IMAGE",
              help="a named reference view instead of --image (front, left, back, right; repeatable)")
@click.option("--prompt", "text_prompt", default=None, help="what the texture should look like")
@click.option("--target-faces", type=click.IntRange(100, 5_000_000), default=None)
@click.option("--view-renders", is_flag=True, default=None,
              help="also render the result from the front, left, back and right (saved beside the model)")
@_job_options
@_reports_errors
def texture(mesh: Path, images: tuple[Path, ...], views: tuple[str, ...], text_prompt: str | None,
            target_faces: int | None, view_renders: bool | None, **opts: Any) -> None:
    """A texture for MESH from --image(s) (or --view NAME=IMAGE) and/or --prompt."""
    if not images and not text_prompt and not views:
        raise click.UsageError("give --image PATH (or --view NAME=IMAGE) or --prompt TEXT (or both)")
    source, inputs, named = _local(mesh), [_local(path) for path in images], _named_views(views)
    fields = _fields(opts, target_faces=target_faces, view_renders=view_renders or None)
    _run(opts, lambda p3d: p3d.generate_texture(
        mesh=_sent(p3d, source), images=[_sent(p3d, i) for i in inputs], views=_sent_views(p3d, named),
        text_prompt=text_prompt, **fields))


@click.command()
@click.argument("mesh", type=click.Path(path_type=Path))
@_job_options
@_reports_errors
def segment(mesh: Path, **opts: Any) -> None:
    """Split MESH into labelled parts."""
    source, fields = _local(mesh), _fields(opts, feature="segmentation")
    _run(opts, lambda p3d: p3d.segment(mesh=_sent(p3d, source), **fields))


@click.command()
@click.argument("mesh", type=click.Path(path_type=Path))
@_job_options
@_reports_errors
def rig(mesh: Path, **opts: Any) -> None:
    """A skeleton and skin weights for MESH."""
    source, fields = _local(mesh), _fields(opts, feature="auto_rigging")
    _run(opts, lambda p3d: p3d.rig(mesh=_sent(p3d, source), **fields))


def _local(path: Path) -> Path | str:
    """A local file (uploaded when the job is submitted), or a file id (file_…) or another job's output
    (job_…/model.glb), which passes as it is."""
    if not path.exists() and re.fullmatch(r"file_[0-9a-f]+|job_[0-9a-f]+/[\w.-]+", str(path)):
        return str(path)
    if not path.is_file():
        raise click.BadParameter(f"{path}: no such file")
    return path


def _sent(p3d: Client, item: Path | str) -> str:
    return p3d.upload(item).file_id if isinstance(item, Path) else item


def _named_views(views: tuple[str, ...]) -> dict[str, Path | str]:
    """--view NAME=IMAGE, checked: a name the API knows, a file that exists."""
    named: dict[str, Path | str] = {}
    for text in views:
        name, path = _pair(text, "--view")
        if name not in VIEW_NAMES:
            raise click.BadParameter(f"{text!r}: the view names are {', '.join(VIEW_NAMES)}", param_hint="--view")
        named[name] = _local(Path(path))
    return named


def _sent_views(p3d: Client, named: dict[str, Path | str]) -> dict[Any, str] | None:
    return {name: _sent(p3d, item) for name, item in named.items()} or None


def _fields(opts: dict[str, Any], *, feature: str | None = None, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {k: opts[k] for k in ("model_preference", "quality", "seed", "priority", "webhook_url")}
    fields["webhook_events"] = list(opts["webhook_events"]) or None
    if fields["webhook_events"] and not fields["webhook_url"]:
        raise click.BadParameter("needs --webhook-url (registered endpoints: pocket3d webhooks create)",
                                 param_hint="--webhook-event")
    asked = _formats(opts["output_format"], feature)
    fields["output_format" if len(asked) == 1 else "output_formats"] = asked[0] if len(asked) == 1 else asked
    fields["parameters"] = {key: _json_or_text(value) for key, value in (_pair(p, "--param") for p in opts["params"])}
    fields["parameters"] = fields["parameters"] or None
    fields.update(extra)
    return {k: v for k, v in fields.items() if v is not None}


def _pair(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r}: expected NAME=VALUE", param_hint=option)
    return key, value


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _formats(text: str, feature: str | None = None) -> list[OutputFormat]:
    """--format's list, checked before anything is sent: formats pocket3d writes, and of those the ones that keep
    what ``feature`` makes (a rig's skeleton, the parts of a segmentation)."""
    offered = list(formats.formats_for(feature)) if feature else FORMATS
    asked = list(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    if not asked or any(f not in offered for f in asked):
        raise click.BadParameter(f"{text!r}: one or more of {', '.join(offered)}, comma-separated",
                                 param_hint="--format")
    return cast("list[OutputFormat]", asked)


def _say_retries(console: Console) -> None:
    """The SDK's retries (a busy server, a dropped connection) as lines on stderr, so a wait is not silent."""
    import logging

    class ToConsole(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            console.print(f"[yellow]{record.getMessage()}[/]", highlight=False)

    logger = logging.getLogger("pocket3d.client")
    if not any(isinstance(h, ToConsole) for h in logger.handlers):
        logger.addHandler(ToConsole(logging.WARNING))
        logger.propagate = False


def _run(opts: dict[str, Any], submit: Callable[[Client], Job]) -> None:
    from pocket3d.client import Client, JobError

    as_json: bool = opts["as_json"]
    _say_retries(_console())
    with Client(opts["url"], api_key=opts["api_key"]) as p3d:
        job = submit(p3d)
        if opts["no_wait"]:
            _emit(as_json, job.view.model_dump(mode="json"), f"{job.id}\t{job.status}")
            return
        try:
            _follow(job, quiet=as_json)
        except JobError:  # a script reading --json gets the job as it ended too (its error, its stages)
            if as_json:
                _emit(True, {"job": job.view.model_dump(mode="json"), "files": {}}, "")
            raise
        files = _save(job, opts["output"])
    _emit(as_json, {"job": job.view.model_dump(mode="json"), "files": {k: str(v) for k, v in files.items()}},
          "\n".join(f"saved {path}" for path in files.values()))


def _save(job: Job, dest: Path | None) -> dict[str, Path]:
    """The job's model files, one per format, and its view renders when it made them: by default here, under the
    names the server gives them; to -o, a directory takes every output, a file path the model file (the suffix
    swapped for each further format; the renders beside it, out-view_0.png …)."""
    if dest is not None and (dest.is_dir() or not dest.suffix or str(dest).endswith(("/", os.sep))):
        return job.download(dest)
    names = [o.name for o in job.view.outputs]
    models = [n for n in names if n.startswith("model.")] or names[:1]
    renders = [n for n in names if re.fullmatch(r"view_\d+\.png", n)]
    here = Path(".")
    saved: dict[str, Path] = {}
    for name in models:
        to = here if dest is None else dest if len(models) == 1 else dest.with_name(_stem(dest) + name.removeprefix("model"))
        saved |= job.download(to, output=name)
    for name in renders:
        saved |= job.download(here if dest is None else dest.with_name(f"{_stem(dest)}-{name}"), output=name)
    return saved


def _stem(dest: Path) -> str:
    """out for out.glb and out.obj.zip."""
    return dest.name.removesuffix(".obj.zip") if dest.name.endswith(".obj.zip") else dest.stem


def _emit(as_json: bool, data: Any, text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


# -- following a job -------------------------------------------------------------------------------------------

@functools.cache
def _console() -> Console:
    """stderr, shared by the progress bar and everything said beside it."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _follow(job: Job, *, quiet: bool) -> JobView:
    """Wait for the job with a progress bar on a terminal (plain lines elsewhere); Ctrl-C asks whether to cancel
    it or leave it running. Returns the succeeded job; raises the SDK's error for any other end."""
    console = _console()
    try:
        with _progress(console, job, quiet) as on_progress:
            return job.wait(on_progress=on_progress)
    except KeyboardInterrupt:
        pass
    _interrupted(console, job)
    raise SystemExit(INTERRUPTED)


@contextmanager
def _progress(console: Console, job: Job, quiet: bool) -> Iterator[Callable[[JobView], None]]:
    """A callback for each new state of the job: a progress bar on a terminal, a line per change of stage or
    message elsewhere (none with --json); warnings are printed as they arrive, in every case."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn

    warned = len(job.view.warnings)
    said: list[tuple[str, str | None]] = []

    def warn(view: JobView) -> None:
        nonlocal warned
        for w in view.warnings[warned:]:
            console.print(f"[yellow]warning[/] {escape(w.code)} ({escape(w.stage)}): {escape(w.message)}")
        warned = len(view.warnings)

    def lines(view: JobView) -> None:
        warn(view)
        if quiet or (_state(view), view.message) in said[-1:]:
            return
        said.append((_state(view), view.message))
        message = f" {view.message}" if view.message and not view.status.is_final else ""
        console.print(f"{job.id}: {_state(view)} {view.progress:.0f}%{message}", markup=False, highlight=False)

    if not console.is_terminal:
        lines(job.view)
        yield lines
        return
    progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                        TextColumn("{task.fields[info]}"), console=console)
    task = progress.add_task(job.id, total=100, info="")

    def update(view: JobView) -> None:
        warn(view)
        progress.update(task, completed=view.progress, description=escape(_state(view)),
                        info=escape(_describe(view)))

    update(job.view)
    with progress:
        yield update


def _state(view: JobView) -> str:
    return (view.current_stage or view.status) if view.status == "running" else view.status


def _describe(view: JobView) -> str:
    """Beside the bar: the model's message, the place in the queue, the ETA."""
    parts = [view.message] if view.message and view.status == "running" else []
    if view.status == "queued" and view.queue_position is not None:
        parts.append(f"queue position {view.queue_position}")
    if view.eta_seconds is not None and not view.status.is_final:
        parts.append(f"ETA {_duration(view.eta_seconds)}")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _interrupted(console: Console, job: Job) -> None:
    """Ask whether to cancel the job on the server; without a terminal to ask on, leave it running."""
    answer = "leave"
    if sys.stdin.isatty():
        try:
            answer = click.prompt(f"\n{job.id} is {job.status}: cancel it, or leave it running?",
                                  type=click.Choice(["cancel", "leave"]), default="leave", err=True)
        except (click.Abort, EOFError):
            answer = "leave"
    if answer == "cancel":
        job.cancel()
        console.print(f"{job.id}: cancel requested ({job.status})", highlight=False)
    else:
        console.print(f"{job.id} keeps running: pocket3d jobs watch {job.id}", highlight=False)


# -- jobs ------------------------------------------------------------------------------------------------------

@click.group()
def jobs() -> None:
    """List, show, follow, cancel and download jobs on a server."""


@jobs.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]), default=None)
@click.option("--feature", type=click.Choice(["mesh_generation", "texture_generation", "segmentation",
                                              "auto_rigging"]), default=None)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--cursor", default=None, help="next_cursor of the previous page")
@_server_options
@_reports_errors
def jobs_list(status: str | None, feature: str | None, limit: int, cursor: str | None, url: str | None,
              api_key: str | None, as_json: bool) -> None:
    """Your jobs, newest first."""
    from rich import box
    from rich.table import Table

    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        page = p3d.jobs.list(status=cast("StatusFilter | None", status), feature=cast("FeatureFilter | None", feature),
                             limit=limit, cursor=cursor)
    if as_json:
        _emit(True, {"jobs": [j.view.model_dump(mode="json") for j in page.items], "next_cursor": page.next_cursor},
              "")
        return
    if not page.items:
        click.echo("no jobs" + (" with these filters" if status or feature or cursor else ""), err=True)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ("job", "feature", "model", "status", "done", "created"):
        table.add_column(name, no_wrap=name in ("job", "status"))
    for job in page.items:
        v = job.view
        table.add_row(v.job_id, v.feature, v.model, _status(v), f"{v.progress:.0f}%",
                      v.created_at[5:16].replace("T", " "))
    _stdout().print(table)
    if page.next_cursor:
        click.echo(f"more: pocket3d jobs list --cursor {page.next_cursor}", err=True)


@jobs.command("show")
@click.argument("job_id")
@_server_options
@_reports_errors
def jobs_show(job_id: str, url: str | None, api_key: str | None, as_json: bool) -> None:
    """One job: state, stages, outputs."""
    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        view = p3d.jobs.get(job_id).view
    if as_json:
        _emit(True, view.model_dump(mode="json"), "")
        return
    _show(view)


@jobs.command("watch")
@click.argument("job_id")
@_server_options
@_reports_errors
def jobs_watch(job_id: str, url: str | None, api_key: str | None, as_json: bool) -> None:
    """Follow a job until it ends; exit status 1 if it fails."""
    from pocket3d.client import Client, JobError

    with Client(url, api_key=api_key) as p3d:
        job = p3d.jobs.get(job_id)
        try:
            _follow(job, quiet=as_json)
        except JobError:
            if as_json:
                _emit(True, job.view.model_dump(mode="json"), "")
            raise
    _emit(as_json, job.view.model_dump(mode="json"), f"{job.id} {job.status}")


@jobs.command("cancel")
@click.argument("job_id")
@_server_options
@_reports_errors
def jobs_cancel(job_id: str, url: str | None, api_key: str | None, as_json: bool) -> None:
    """Cancel a job: a queued one at once, a running one at its next progress report."""
    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        view = p3d.jobs.cancel(job_id).view
    _emit(as_json, view.model_dump(mode="json"),
          f"{view.job_id} {view.status}" + (" (cancel requested)" if view.cancel_requested else ""))


@jobs.command("convert")
@click.argument("job_id")
@click.option("--format", "output_format", required=True, metavar="FORMAT[,FORMAT…]",
              help="the formats to write the result in (those the job's feature offers)")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), default=None,
              help="a file, or a directory for every output [default: here, under the server's names]")
@click.option("--no-wait", is_flag=True, help="submit, print the new job and return")
@_server_options
@_reports_errors
def jobs_convert(job_id: str, output_format: str, **opts: Any) -> None:
    """A succeeded job's result in other formats, as a new job: the model does not run again."""
    asked = _formats(output_format)
    _run(opts, lambda p3d: p3d.jobs.convert(job_id, asked))


@jobs.command("download")
@click.argument("job_id")
@click.option("-o", "--output", "dest", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="a directory for every output, or a file for one")
@click.option("--name", default=None, help="only this output (model.glb, preview.png, …)")
@_server_options
@_reports_errors
def jobs_download(job_id: str, dest: Path, name: str | None, url: str | None, api_key: str | None,
                  as_json: bool) -> None:
    """Save a succeeded job's outputs."""
    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        try:
            files = p3d.jobs.get(job_id).download(dest, output=name)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--name") from None
    _emit(as_json, {"files": {k: str(v) for k, v in files.items()}},
          "\n".join(f"saved {path}" for path in files.values()))


@jobs.command("deliveries")
@click.argument("job_id")
@_server_options
@_reports_errors
def jobs_deliveries(job_id: str, url: str | None, api_key: str | None, as_json: bool) -> None:
    """The job's webhook deliveries and every attempt of each."""
    from rich.markup import escape
    from rich.table import Table

    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        deliveries = p3d.webhooks.deliveries(job_id)
    if as_json:
        _emit(True, {"deliveries": [d.model_dump(mode="json") for d in deliveries]}, "")
        return
    if not deliveries:
        click.echo(f"no webhook deliveries for {job_id}", err=True)
        return
    table = Table("delivery", "event", "url", "status", "attempts", "last answer", box=None, pad_edge=False)
    for d in deliveries:
        last = d.attempts[-1] if d.attempts else None
        answer = "" if last is None else str(last.status_code) if last.error is None else last.error
        table.add_row(d.id, d.event, escape(d.url), d.status, str(len(d.attempts)), escape(answer))
    _stdout().print(table)


# -- files -----------------------------------------------------------------------------------------------------

@click.group()
def files() -> None:
    """Your uploads on a server: list and delete them (generate, texture, segment and rig upload for you)."""


@files.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--cursor", default=None, help="next_cursor of the previous page")
@_server_options
@_reports_errors
def files_list(limit: int, cursor: str | None, url: str | None, api_key: str | None, as_json: bool) -> None:
    """Your uploads that have not expired, newest first."""
    from rich.markup import escape
    from rich.table import Table

    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        page = p3d.files.list(limit=limit, cursor=cursor)
    if as_json:
        _emit(True, {"files": [f.model_dump(mode="json") for f in page.items], "next_cursor": page.next_cursor}, "")
        return
    if not page.items:
        click.echo("no files", err=True)
        return
    table = Table("file", "name", "kind", "format", "size", "expires", box=None, pad_edge=False)
    for f in page.items:
        table.add_row(f.file_id, escape(f.filename or ""), f.kind, f.format, f"{f.size:,}",
                      (f.expires_at or "")[5:16].replace("T", " "))
    _stdout().print(table)
    if page.next_cursor:
        click.echo(f"more: pocket3d files list --cursor {page.next_cursor}", err=True)


@files.command("delete")
@click.argument("file_ids", nargs=-1, required=True)
@_server_options
@_reports_errors
def files_delete(file_ids: tuple[str, ...], url: str | None, api_key: str | None, as_json: bool) -> None:
    """Delete uploads at once (a job that already took one keeps it until the job ends)."""
    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        for file_id in file_ids:
            p3d.files.delete(file_id)
    _emit(as_json, {"deleted": list(file_ids)}, "\n".join(f"deleted {f}" for f in file_ids))


# -- webhooks --------------------------------------------------------------------------------------------------

@click.group()
def webhooks() -> None:
    """Endpoints that receive your jobs' events, signed by the Standard Webhooks scheme."""


@webhooks.command("create")
@click.argument("endpoint_url")
@click.option("--event", "events", multiple=True, type=click.Choice(WEBHOOK_EVENTS),
              help="an event it hears (repeatable) [default: job.succeeded, job.failed, job.cancelled]")
@click.option("--description", default=None)
@_server_options
@_reports_errors
def webhooks_create(endpoint_url: str, events: tuple[str, ...], description: str | None, url: str | None,
                    api_key: str | None, as_json: bool) -> None:
    """Register ENDPOINT_URL for all your jobs; prints its secret (whsec_…), which is shown only this once."""
    from pocket3d.client import Client

    chosen = cast("list[WebhookEventName]", list(events) or ["job.succeeded", "job.failed", "job.cancelled"])
    with Client(url, api_key=api_key) as p3d:
        created = p3d.webhooks.create(endpoint_url, chosen, description=description)
    _emit(as_json, created.model_dump(mode="json"),
          f"{created.id} {created.url} ({', '.join(created.events)})\nsecret {created.secret}\n"
          "(shown only now: keep it where your receiver verifies deliveries)")


@webhooks.command("list")
@_server_options
@_reports_errors
def webhooks_list(url: str | None, api_key: str | None, as_json: bool) -> None:
    """Your registered endpoints."""
    from rich.markup import escape
    from rich.table import Table

    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        endpoints = p3d.webhooks.list()
    if as_json:
        _emit(True, {"endpoints": [e.model_dump(mode="json") for e in endpoints]}, "")
        return
    if not endpoints:
        click.echo("no webhook endpoints", err=True)
        return
    table = Table("endpoint", "url", "events", "description", box=None, pad_edge=False)
    for e in endpoints:
        table.add_row(e.id, escape(e.url), ", ".join(e.events), escape(e.description or ""))
    _stdout().print(table)


@webhooks.command("delete")
@click.argument("endpoint_ids", nargs=-1, required=True)
@_server_options
@_reports_errors
def webhooks_delete(endpoint_ids: tuple[str, ...], url: str | None, api_key: str | None, as_json: bool) -> None:
    """Stop sending to these endpoints."""
    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        for endpoint_id in endpoint_ids:
            p3d.webhooks.delete(endpoint_id)
    _emit(as_json, {"deleted": list(endpoint_ids)}, "\n".join(f"deleted {e}" for e in endpoint_ids))


@webhooks.command("secret")
@_server_options
@_reports_errors
def webhooks_secret(url: str | None, api_key: str | None, as_json: bool) -> None:
    """The secret that signs deliveries to your requests' --webhook-url."""
    from pocket3d.client import Client

    with Client(url, api_key=api_key) as p3d:
        secret = p3d.webhooks.secret()
    _emit(as_json, {"secret": secret}, secret)


def _stdout() -> Console:
    """Tables on stdout. Into a pipe or a file they keep their natural width (up to 200 columns; $COLUMNS decides
    where set): rich's 80 columns would cut model names and job ids short for grep and awk."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200)
    return console


def _status(view: JobView) -> str:
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}.get(view.status)
    return f"[{colour}]{view.status}[/]" if colour else view.status


def _show(view: JobView) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _stdout()
    summary = Table.grid(padding=(0, 2))
    rows: list[tuple[str, str]] = [
        ("job", view.job_id), ("status", _status(view)), ("feature", view.feature), ("model", escape(view.model)),
        ("progress", f"{view.progress:.0f}%" + (f" ({view.current_stage})" if view.current_stage else "")),
        ("created", view.created_at), ("finished", view.finished_at or "")]
    if view.message:  # on a job that has ended, what its model said last, not what it is doing
        rows.append(("last message" if view.status.is_final else "message", escape(view.message)))
    if view.error:
        rows.append(("error", f"[red]{view.error.code}[/]: {escape(view.error.message)}"))
    if view.expires_at:
        rows.append(("expires", view.expires_at))
    extra = _describe(view)
    if extra and not view.status.is_final:
        rows.append(("now", escape(extra)))
    rows += [("warning", f"[yellow]{escape(w.code)}[/] ({escape(w.stage)}): {escape(w.message)}")
             for w in view.warnings]
    for key, value in rows:
        summary.add_row(f"[dim]{key}[/]", value)
    console.print(summary)
    stages = Table("stage", "model", "device", "status", "progress", "attempts", "seconds", title="stages",
                   title_justify="left")
    for s in view.stages:
        stages.add_row(s.name, escape(s.model or ""), s.device or "", s.status, f"{s.progress:.0f}%", str(s.attempts),
                       f"{s.seconds:.1f}" if s.seconds is not None else "")
    console.print(stages)
    if view.outputs:
        outputs = Table("output", "format", "size", "sha256", title="outputs", title_justify="left")
        for o in view.outputs:
            outputs.add_row(o.name, o.format, f"{o.size:,}", o.sha256[:12])
        console.print(outputs)


COMMANDS = [generate, texture, segment, rig, jobs, files, webhooks]
