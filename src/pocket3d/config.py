"""System configuration: ``config/system.yaml`` overridden by ``POCKET3D_*`` variables and CLI flags.

Precedence, highest first: command-line flags, environment (``POCKET3D_DATA_DIR``,
``POCKET3D_SERVER__PORT``: nested keys joined by a double underscore), the YAML file, the defaults below.
The defaults are the embedded profile: SQLite and files under ``data_dir``, loopback only, auth off.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

DEFAULT_SYSTEM_FILE = Path("config/system.yaml")
DEFAULT_MODELS_FILE = Path("config/models.yaml")


class ConfigError(Exception):
    """Start-up stops with this; the message names the file, the key and the reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Largest JSON request body (base64 data URIs count here); uploads to /files use storage.max_file_size.
    max_request_size: ByteSize = ByteSize(100 * 1024 * 1024)
    # Upper bound for ?wait=N on submit, so a slow client cannot pin a connection for ever.
    max_wait: int = Field(60, ge=0, le=600)
    cors_origins: list[str] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    idempotency_ttl: int = Field(86400, ge=60, description="seconds a submit's Idempotency-Key is remembered: "
                                 "the same key within it returns the job it made")
    public_url: str | None = Field(None, description="the server's address as clients reach it (behind a proxy: "
                                   "https://3d.example.com/pocket3d); absolute URLs pocket3d returns start with it, "
                                   "else with the request's scheme and Host")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> ServerSettings:
        if "*" in self.cors_origins and self.cors_allow_credentials:
            raise ValueError("cors_origins '*' cannot be combined with cors_allow_credentials: true; "
                             "list the allowed origins instead")
        return self

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class AuthSettings(_Section):
    # Off is allowed only on a loopback address; then every request acts as one local owner.
    enabled: bool = False


class VirtualDevice(_Section):
    """A slice of this machine's CPU and RAM with a worker process and a memory budget of its own: for tests,
    simulation, and CPU hosts that should run several models side by side with firm limits."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    memory: int = Field(ge=1, description="MB this device may hold")
    name: str | None = None


class GpuSettings(_Section):
    auto_detect: bool = Field(True, description="find NVIDIA GPUs through NVML")
    memory_buffer: int = Field(1024, ge=0, description="MB kept free on every device")
    max_utilization: float = Field(0.9, gt=0, le=1, description="share of a device's memory the scheduler may "
                                   "fill (before the buffer is taken off)")
    cpu_device: bool = Field(True, description="run CPU models in a worker of their own; its budget is the RAM "
                             "(x max_utilization, less the buffer); off when virtual devices stand in for it")
    cpu_worker_nice: int = Field(10, ge=0, le=19, description="how much lower than the server's the scheduling "
                                 "priority (nice) of the CPU device's worker and the export worker is: requests "
                                 "are answered first on a busy machine; 0 where other programs at normal "
                                 "priority share the cores and would starve the models")
    virtual_devices: list[VirtualDevice] = Field(default_factory=list)

    @field_validator("virtual_devices")
    @classmethod
    def _unique_ids(cls, v: list[VirtualDevice]) -> list[VirtualDevice]:
        ids = [d.id for d in v]
        if len(set(ids)) != len(ids) or "cpu" in ids:
            raise ValueError("virtual device ids must be unique and not 'cpu'")
        return v


class SchedulerSettings(_Section):
    queue_size: int = Field(1000, ge=1, description="jobs waiting or running before submit answers QUEUE_FULL")
    max_jobs_per_owner: int = Field(100, ge=1, description="jobs one owner may have waiting or running before "
                                    "their submit answers 429 CONCURRENCY_LIMITED, so one key's flood leaves room "
                                    "in the queue for the others")
    job_timeout: int = Field(1800, ge=1, description="seconds one stage may run once its model is loaded (the "
                             "load has load_timeout of its own)")
    load_timeout: int = Field(1800, ge=1, description="seconds a model's load may take, apart from job_timeout: a "
                              "cold start of a large model from a slow disk takes minutes, and a user's stage must "
                              "not time out because a load was slow")
    cleanup_interval: int = Field(300, ge=1, description="seconds between retention sweeps")
    priority_weights: dict[str, float] = Field(default_factory=lambda: {
        "mesh_generation": 1.0, "texture_generation": 0.8, "segmentation": 0.6, "auto_rigging": 0.4})
    max_attempts: int = Field(3, ge=1, description="tries of one stage before the job fails; counts what the stage "
                              "may have caused (its model failing, its worker dying, a timeout)")
    max_interruptions: int = Field(10, ge=0, description="times the server may restart (or a node stop) while one "
                                   "stage runs before the job fails with WORKER_LOST; not counted in max_attempts")
    model_idle_timeout: float = Field(600, ge=0, description="seconds a model may sit unused before it is "
                                      "unloaded (pinned models never are); 0: never for idleness")
    cancel_grace: float = Field(10, gt=0, description="seconds a cancelled stage has to stop before its device "
                                "worker is killed (a model that never reports progress cannot be stopped otherwise)")
    ageing_seconds: float = Field(120, gt=0, description="a waiting stage's claim on the devices grows by its "
                                  "initial value every this many seconds, so low-priority work cannot starve")
    max_wait: float = Field(600, gt=0, description="seconds a runnable stage may wait before it goes ahead of every "
                            "other and may take a device from another model's finished batch (a bound that holds "
                            "while the node keeps up with what arrives)")
    lease_seconds: float = Field(30.0, gt=0, description="a running stage's lease; renewed while it runs")
    concurrency: int = Field(2, ge=1, le=256, description="stages computed at once on a CPU device (a GPU computes "
                             "one at a time)")


class S3Settings(_Section):
    """An S3-compatible bucket for the artifacts. Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a web identity token as IRSA sets it, an instance profile), never from
    this file."""

    bucket: str = Field("", description="the bucket (it must exist)")
    prefix: str = Field("", description="key prefix inside the bucket, e.g. 'pocket3d/'")
    endpoint: str | None = Field(None, description="endpoint URL of a non-AWS store (MinIO, SeaweedFS, R2...); "
                                 "unset: AWS")
    region: str | None = Field(None, description="unset: the chain's (AWS_REGION, the profile)")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="auto: path-style with a custom endpoint, virtual-hosted on AWS")
    downloads: Literal["proxy", "redirect"] = Field(
        "proxy", description="proxy: the server streams the object (Range, ETag); redirect: 307 to a presigned URL")
    public_endpoint: str | None = Field(None, description="the endpoint presigned URLs name, when clients reach "
                                        "the store at another address than the server does")
    presign_seconds: int = Field(900, ge=1, le=7 * 86400, description="how long a presigned URL is valid")
    part_size: ByteSize = Field(ByteSize(16 * 1024 * 1024), ge=5 * 1024 * 1024,
                                description="multipart upload part size (S3's minimum is 5 MiB)")
    max_concurrency: int = Field(4, ge=1, le=64, description="parts in flight per upload or download")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip("/")
        return f"{v}/" if v else ""


class StorageSettings(_Section):
    backend: Literal["local", "s3"] = Field("local", description="local: data_dir/artifacts; s3: the bucket in s3")
    s3: S3Settings = Field(default_factory=S3Settings)
    cleanup_after: int = Field(86400, ge=60, description="seconds the outputs of a succeeded job are kept")
    file_lifetime: int = Field(86400, ge=1, description="seconds an upload stays usable by its owner's jobs (its "
                               "expires_at); a job that took it keeps it until that job ends")
    max_file_size: ByteSize = ByteSize(500 * 1024 * 1024)
    keep_inputs: bool | None = Field(None, description="no longer used (uploads live until their expires_at); "
                                     "accepted so older configuration files still load, with a warning")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="larger images are refused, not decoded")
    max_mesh_faces: int = Field(2_000_000, ge=1, description="larger meshes are refused with MESH_TOO_LARGE")
    max_mesh_vertices: int = Field(2_000_000, ge=1)
    min_free_space: ByteSize = Field(ByteSize(100 * 1024 * 1024), description="less free space than this on the "
                                     "data directory's disk makes /system/ready answer not ready")
    max_mesh_nodes: int = Field(10_000, ge=1, description="scene graph nodes; faces and vertices are counted over "
                                "every node that places a mesh")
    max_mesh_coordinate: float = Field(1e7, gt=0, description="meshes reaching farther from the origin are "
                                       "refused with INVALID_MESH (such values overflow in the models' arithmetic)")
    max_texture_pixels: int = Field(8192 * 8192, ge=1, description="pixels of a mesh's textures, all together; "
                                    "more is refused with MESH_TOO_LARGE (each is decoded whole by what reads it)")

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError("storage.backend s3 needs storage.s3.bucket")
        return self

    @property
    def mesh_limits(self):  # noqa: ANN201 - geometry.MeshLimits; imported lazily to keep config a leaf
        from pocket3d.geometry import MeshLimits

        return MeshLimits(max_faces=self.max_mesh_faces, max_vertices=self.max_mesh_vertices,
                          max_nodes=self.max_mesh_nodes, max_coordinate=self.max_mesh_coordinate,
                          max_texture_pixels=self.max_texture_pixels,
                          max_unpacked_bytes=int(self.max_file_size))  # a zip holds no more than an upload


class WebhookSettings(_Section):
    allow_hosts: list[str] = Field(default_factory=list, description="host names, addresses or networks (CIDR) "
                                   "that deliveries may reach although they are loopback, private, link-local or "
                                   "cloud metadata; everything else of that kind is refused")
    timeout: float = Field(10.0, gt=0, le=300, description="seconds one attempt may take, answer included")
    max_response_size: ByteSize = Field(ByteSize(64 * 1024), description="more of an answer is not read")
    max_redirects: int = Field(3, ge=0, le=10, description="307/308 redirects followed, each checked again")
    retry_base: float = Field(5.0, gt=0, description="seconds before the first retry; doubled at each retry, "
                              "with jitter")
    retry_max_delay: float = Field(3600.0, gt=0, description="the longest wait between two attempts")
    retry_for: float = Field(86400.0, gt=0, description="seconds after which a delivery that never got a 2xx "
                             "is marked failed")
    progress_interval: float = Field(10.0, ge=0, description="at most one job.progress event a job per this many "
                                     "seconds")
    max_endpoints: int = Field(5, ge=0, le=100, description="registered endpoints per owner")
    concurrency: int = Field(4, ge=1, le=64, description="deliveries in flight at once")


class MetricsSettings(_Section):
    enabled: bool = True
    port: int | None = Field(None, ge=1, le=65535, description="also serve /metrics on this port, without auth "
                             "(for a scraper inside the network); on the API port it needs an admin key")
    host: str = Field("127.0.0.1", description="address of metrics.port")


LogFormat = Literal["text", "json"]
TEXT_LOG_PATTERN = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


CompatFlavourName = Literal["hunyuan", "trellis", "protoscale", "sam3d", "tripo", "comfy"]
RootFlavourName = Literal["hunyuan", "trellis", "protoscale", "sam3d"]


class CompatFlavour(_Section):
    """One foreign contract served by ``pocket3d.api.compat`` (its mount is ``/compat/<flavour>``)."""

    enabled: bool = True
    owner: str | None = Field(None, description="with auth on, the owner a keyless client (hunyuan, trellis, "
                              "protoscale, sam3d) acts as; unset: such requests answer 401. Tripo and Comfy clients "
                              "send keys and ignore it")
    model: str | None = Field(None, description="the model id its jobs use; unset: the flavour's preferred model "
                              "when it is available, else the registry's pick")
    listen: int | None = Field(None, ge=1, le=65535, description="also serve it at the root of this port (on "
                               "server.host), for clients that cannot take a path in their base URL")


class CompatSettings(_Section):
    root: RootFlavourName | None = Field(None, description="the flavour served at / beside its prefix (one of "
                                         "the four with root paths), for clients with a hard-coded origin")
    wait_limit: int = Field(600, ge=1, le=3600, description="seconds a synchronous compat route (hunyuan and "
                            "trellis /generate, sam3d /api/inference) waits for its job, past server.max_wait")
    signing_secret: str | None = Field(None, min_length=16, description="HMAC key of the signed result URLs "
                                       "(share it between gateways); unset: generated once into data_dir")
    hunyuan: CompatFlavour = Field(default_factory=CompatFlavour)
    trellis: CompatFlavour = Field(default_factory=CompatFlavour)
    protoscale: CompatFlavour = Field(default_factory=CompatFlavour)
    sam3d: CompatFlavour = Field(default_factory=CompatFlavour)
    tripo: CompatFlavour = Field(default_factory=CompatFlavour)
    comfy: CompatFlavour = Field(default_factory=CompatFlavour)

    def flavour(self, name: str) -> CompatFlavour:
        return getattr(self, name)

    @model_validator(mode="after")
    def _consistent(self) -> CompatSettings:
        if self.root is not None and not self.flavour(self.root).enabled:
            raise ValueError(f"root: {self.root!r} is switched off (compat.{self.root}.enabled: false)")
        ports = [f.listen for f in (self.hunyuan, self.trellis, self.protoscale, self.sam3d, self.tripo, self.comfy)
                 if f.listen is not None]
        if len(set(ports)) != len(ports):
            raise ValueError("two flavours listen on one port")
        return self


class InputSettings(_Section):
    allow_urls: bool = Field(False, description="take URLs as image inputs, fetched once at submission through the "
                             "outbound guard (no private, loopback or metadata addresses, after DNS and on every "
                             "redirect); off: a URL input is refused")
    url_schemes: list[Literal["https", "http"]] = Field(default_factory=lambda: ["https"], min_length=1,
                                                        description="the schemes a URL input may have")
    allow_hosts: list[str] = Field(default_factory=list, description="host names, addresses or networks (CIDR) "
                                   "URL inputs may come from although they are private or loopback")
    max_url_size: ByteSize = Field(ByteSize(20 * 1024 * 1024), description="a larger image is refused, unread")
    url_timeout: float = Field(20.0, gt=0, le=300, description="seconds one fetch may take, redirects included")


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: LogFormat = Field("text", description="text: one line for people (text_pattern); json: one JSON "
                              "object a line, for a log shipper")
    text_pattern: str = TEXT_LOG_PATTERN
    access: bool = Field(True, description="one access line per HTTP request (method, route, status, seconds, key "
                         "id); off saves a few percent of a server answering thousands of status polls a second")
    file: Path | None = Field(None, description="relative paths are under data_dir; unset logs to stderr only")
    max_size: ByteSize = ByteSize(10 * 1024 * 1024)
    backup_count: int = Field(5, ge=0)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="before")
    @classmethod
    def _pattern_in_format(cls, data: Any) -> Any:
        # Before "json" existed, `format` held the text pattern: such a file keeps working.
        if isinstance(data, dict) and isinstance(data.get("format"), str) and "%(" in data["format"]:
            data = {**data, "text_pattern": data["format"], "format": "text"}
        return data


class ClusterSettings(_Section):
    """Gateways and workers sharing PostgreSQL and an S3 bucket (``pocket3d serve --role gateway``,
    ``pocket3d worker``)."""

    heartbeat_seconds: float = Field(5.0, gt=0, le=60, description="how often a node writes its row in the nodes "
                                     "table; one silent for 3 beats is taken as gone")
    prefer_resident_seconds: float = Field(10.0, ge=0, description="a stage whose model is loaded, with room, on "
                                           "another live worker is left to that worker for this long before a "
                                           "worker without it loads the model itself (hot models stay hot)")
    hosted_models: list[str] = Field(default_factory=list, description="models a worker pool hosts even while "
                                     "none of its workers runs (scaled to zero, KEDA starts them when stages "
                                     "wait): a gateway accepts their jobs, which wait for the pool; '*': every "
                                     "model of the gateway's registry. Other models are accepted once a worker "
                                     "hosting them has been seen (the Helm chart fills this in from its pools)")


class WorkerSettings(_Section):
    """``pocket3d worker``: one node of a cluster, its devices and no public API."""

    drain_seconds: float = Field(300.0, ge=0, description="on SIGTERM the worker claims nothing more and lets its "
                                 "running stages finish for this long; what still runs then is given back to the "
                                 "queue for another worker (keep it under the pod's termination grace period)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POCKET3D_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path("data")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite file in data_dir")
    models_file: Path = DEFAULT_MODELS_FILE
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    compat: CompatSettings = Field(default_factory=CompatSettings)
    inputs: InputSettings = Field(default_factory=InputSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'pocket3d.db').resolve()}"

    def check_can_serve(self) -> None:
        """Refuse a server that would expose an unauthenticated API beyond this machine, or listen twice on a
        port."""
        for name in ("hunyuan", "trellis", "protoscale", "sam3d", "tripo", "comfy"):
            if self.compat.flavour(name).listen == self.server.port:
                raise ConfigError(f"compat.{name}.listen: {self.server.port} is server.port; give the flavour a "
                                  "port of its own")
        if not self.auth.enabled and not self.server.is_loopback:
            raise ConfigError(
                f"server.host: {self.server.host!r} is not a loopback address and auth.enabled is false; "
                "enable auth (and create keys with `pocket3d keys create`) or bind to 127.0.0.1")


    def check_cluster_role(self, role: str) -> None:
        """A gateway or worker shares its jobs and artifacts with other nodes: refuse what only this machine
        can read."""
        command = "pocket3d worker" if role == "worker" else f"pocket3d serve --role {role}"
        if not self.db_url.startswith("postgresql"):
            raise ConfigError(
                f"{command} needs a database every node reaches: set database_url to a PostgreSQL URL "
                "(POCKET3D_DATABASE_URL=postgresql+psycopg://user:password@host:5432/pocket3d); "
                f"{self.db_url.split(':', 1)[0]} is one machine's file. `pocket3d serve` without --role runs "
                "everything in one process on SQLite")
        if self.storage.backend == "local":
            raise ConfigError(
                f"{command} needs artifacts every node reaches: storage.backend is local ({self.data_dir}/artifacts, "
                "which other nodes cannot read); set storage.backend: s3 and storage.s3.bucket "
                "(POCKET3D_STORAGE__BACKEND=s3, POCKET3D_STORAGE__S3__BUCKET=…)")


def format_validation_error(err: ValidationError, what: str) -> str:
    """One line a key: ``  server.port: Input should be ...``; what is unknown is called an unknown key."""
    lines = [f"{what}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        reason = e["msg"]
        if e["type"] == "extra_forbidden":
            reason = "unknown key"
        lines.append(f"  {key}: {reason}")
    return "\n".join(lines)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Load settings; ``overrides`` are CLI flags as nested dicts (``server={"port": 9000}``)."""
    explicit = config_file or os.environ.get("POCKET3D_CONFIG")
    path = Path(explicit) if explicit else DEFAULT_SYSTEM_FILE
    if explicit and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    yaml_path = path if path.is_file() else None

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                       init_settings: PydanticBaseSettingsSource,
                                       env_settings: PydanticBaseSettingsSource,
                                       dotenv_settings: PydanticBaseSettingsSource,
                                       file_secret_settings: PydanticBaseSettingsSource):
            sources = [init_settings, env_settings]
            if yaml_path is not None:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path, deep_merge=True))
            return tuple(sources)

    source = f"{yaml_path or 'defaults'}, POCKET3D_* environment, command line"
    try:
        loaded = _FromFile(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"invalid configuration ({source})")) from None
    return Settings.model_construct(**{name: getattr(loaded, name) for name in Settings.model_fields})
