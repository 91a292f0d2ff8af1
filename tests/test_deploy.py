"""The deployment files under deploy/: the Dockerfiles pass hadolint; the Helm chart renders and lints with a real
Helm (embedded by helm-python-sdk) with its defaults and with production-like values, every manifest validates
against the Kubernetes schemas of a pinned version, the environment and settings it gives pocket3d load, and
KEDA's queue query runs on the real stages table; the compose file gives pocket3d settings it accepts."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from server import ROOT

from pocket3d.api import worker_app
from pocket3d.api.routes.system import router as system_router
from pocket3d.cli import main as pocket3d_cli
from pocket3d.config import Settings, load_settings
from pocket3d.jobs import EXPORT_STAGE, NewJob, NewStage
from pocket3d.jobs import transitions as tr
from pocket3d.jobs.store import Store
from pocket3d.models.registry import Registry

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the test extra) embeds Helm")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "pocket3d"
PRODUCTION = DEPLOY / "helm" / "examples" / "production.yaml"
# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion); its schemas are the strictest test.
KUBERNETES = "1.29.0"

# KEDA's resources are custom ones, which kubernetes-validate has no schema for: these are the fields of KEDA's
# v1alpha1 ScaledObject and TriggerAuthentication (keda.sh/docs/2.x/reference/scaledobject-spec and
# .../concepts/authentication) that the chart writes, with the PostgreSQL scaler's trigger metadata.
_KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"spec": {
            "type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                                  "apiVersion": {"type": "string"}}},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["type", "metadata"],
                    "properties": {
                        "type": {"const": "postgresql"}, "name": {"type": "string"},
                        "metadata": {"type": "object", "additionalProperties": False,
                                     "required": ["query", "targetQueryValue"],
                                     "properties": {"query": {"type": "string"},
                                                    "targetQueryValue": {"type": "string", "pattern": r"^\d+$"},
                                                    "activationTargetQueryValue": {"type": "string"}}},
                        "authenticationRef": {"type": "object", "required": ["name"],
                                              "properties": {"name": {"type": "string"}}}}}}}}},
    },
    "TriggerAuthentication": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"spec": {"type": "object", "additionalProperties": False, "properties": {
            "secretTargetRef": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["parameter", "name", "key"],
                "properties": {"parameter": {"enum": ["connection", "password"]}, "name": {"type": "string"},
                               "key": {"type": "string"}}}}}}},
    },
}


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def render(values: dict | None = None) -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        merged = chart.merge_values(values or {})
        chart.validate_schema(merged)
        manifests = chart.render(merged, name="p3d", namespace="pocket3d", is_install=True)
    docs = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def production_values() -> dict:
    return yaml.safe_load(PRODUCTION.read_text())


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _setting_paths(model: type, prefix: str = "") -> set[str]:
    paths = set()
    for name, field in model.model_fields.items():
        paths.add(prefix + name)
        sub = field.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            paths |= _setting_paths(sub, f"{prefix}{name}__")
    return paths


SETTINGS = _setting_paths(Settings)


def assert_settings_load(env: dict[str, str], tmp_path: Path, system_yaml: str | None = None) -> Settings:
    """Every POCKET3D_* variable names a real setting, and pocket3d accepts the lot."""
    unknown = [k for k in env if k.startswith("POCKET3D_") and k != "POCKET3D_CONFIG"
               and k.removeprefix("POCKET3D_").lower() not in SETTINGS]
    assert not unknown, f"not pocket3d settings: {unknown}"
    config = tmp_path / f"system-{secrets.token_hex(3)}.yaml"
    config.write_text(system_yaml or "{}\n")  # explicit, so no config/system.yaml of the checkout sneaks in
    given = {k: v for k, v in env.items() if k.startswith("POCKET3D_") and k != "POCKET3D_CONFIG"}
    with pytest.MonkeyPatch.context() as env_now:  # read as pocket3d reads them: from its environment, alone
        for key in [k for k in os.environ if k.startswith("POCKET3D_")]:
            env_now.delenv(key)
        for key, value in given.items():
            env_now.setenv(key, value)
        return load_settings(config)


# -- Dockerfiles ------------------------------------------------------------------------------------------------


def test_the_dockerfiles_pass_hadolint() -> None:
    files = sorted((DEPLOY / "docker").glob("Dockerfile*"))
    assert len(files) == 2
    run = subprocess.run([_tool("hadolint"), "--no-color", *map(str, files)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr
    for f in files:
        text = f.read_text()
        assert re.search(r"^USER 10001", text, re.M), f"{f.name} runs as root"
        assert "HEALTHCHECK" in text and "-c constraints.txt" in text, f"{f.name}: no health check or no pins"


def test_hadolint_finds_what_it_should(tmp_path) -> None:
    """The lint is live: an unpinned, root, latest-tagged Dockerfile is refused."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python\n")
    run = subprocess.run([_tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "DL3007" in run.stdout and "DL3013" in run.stdout


# -- the Helm chart -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, "production"])
def test_the_chart_lints_and_every_manifest_validates(values, tmp_path) -> None:
    vals = production_values() if values else {}
    report = helm.lint(CHART, vals, strict=True, kube_version=f"v{KUBERNETES}")
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report
    docs = render(vals)
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, _KEDA_SCHEMAS[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job", "ConfigMap",
            "ServiceAccount", "ScaledObject", "TriggerAuthentication"} <= kinds
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert "livenessProbe" in c and "resources" in c


def test_default_values_deploy_gateways_a_cpu_worker_and_gpu_workers_from_zero() -> None:
    docs = render()
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    assert set(deployments) == {"p3d-pocket3d-gateway", "p3d-pocket3d-worker-cpu", "p3d-pocket3d-worker-gpu"}
    gateway = deployments["p3d-pocket3d-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["args"][:3] == ["serve", "--role", "gateway"]
    gpu = deployments["p3d-pocket3d-worker-gpu"]
    assert "replicas" not in gpu["spec"], "KEDA owns the GPU pool's replica count"
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["worker", "--devices", "cuda"] and container["image"] == "pocket3d-cuda:0.1.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    (scaled,) = of_kind(docs, "ScaledObject")
    assert scaled["spec"]["minReplicaCount"] == 0
    assert scaled["spec"]["scaleTargetRef"]["name"] == "p3d-pocket3d-worker-gpu"
    (job,) = of_kind(docs, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert not of_kind(docs, "Ingress")


def test_production_values_give_each_model_family_its_pool(tmp_path) -> None:
    docs = render(production_values())
    names = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    assert names == {"p3d-pocket3d-gateway", "p3d-pocket3d-worker-cpu", "p3d-pocket3d-worker-hunyuan3d",
                     "p3d-pocket3d-worker-trellis2"}
    assert of_kind(docs, "Ingress")[0]["spec"]["tls"][0]["secretName"] == "pocket3d-tls"
    assert not [d for d in of_kind(docs, "Secret") if "database" in d["metadata"]["name"]], \
        "an existing Secret is used, not a new one"
    sa = of_kind(docs, "ServiceAccount")[0]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    queries = {d["metadata"]["name"]: d["spec"]["triggers"][0]["metadata"]["query"]
               for d in of_kind(docs, "ScaledObject")}
    assert "'trellis2-4b'" in queries["p3d-pocket3d-worker-trellis2"]
    assert "'hunyuan3d-2-paint'" in queries["p3d-pocket3d-worker-hunyuan3d"]
    assert "model_id IS NULL" in queries["p3d-pocket3d-worker-cpu"], "the CPU pool scales on exports too"


def test_what_the_chart_gives_pocket3d_loads(tmp_path) -> None:
    """Each container's POCKET3D_* environment and mounted files are settings and registries pocket3d accepts;
    each pool's registry names the same adapters as the shipped config/models.yaml."""
    shipped = {mid: entry for group in yaml.safe_load((ROOT / "config/models.yaml").read_text())["models"].values()
               for mid, entry in group.items()}
    for values in ({}, production_values()):
        docs = render(values)
        (configmap,) = of_kind(docs, "ConfigMap")
        files = configmap.get("data") or {}
        for deployment in of_kind(docs, "Deployment"):
            for c in deployment["spec"]["template"]["spec"]["containers"]:
                env = {e["name"]: e.get("value", "postgresql+psycopg://u:p@db:5432/d") for e in c["env"]}
                system = files["system.yaml"] if "POCKET3D_CONFIG" in env else None
                settings = assert_settings_load(env, tmp_path, system)
                assert settings.storage.backend == "s3" and settings.auth.enabled
                if "POCKET3D_MODELS_FILE" in env:
                    text = files[Path(env["POCKET3D_MODELS_FILE"]).name]
                    path = tmp_path / Path(env["POCKET3D_MODELS_FILE"]).name
                    path.write_text(text)
                    registry = Registry.from_config(path)
                    for model in registry.all():
                        assert model.spec.id in shipped, model.spec.id
                        declared = yaml.safe_load(text)
                        entry = next(g[model.spec.id] for g in declared["models"].values() if model.spec.id in g)
                        assert entry["class"] == shipped[model.spec.id]["class"], model.spec.id
        if values.get("config"):
            configured = assert_settings_load({}, tmp_path, files["system.yaml"])
            assert configured.scheduler.job_timeout == 3600 and configured.storage.max_file_size == 10**9


def test_bad_values_are_refused_by_the_schema() -> None:
    for bad in ({"storage": {"downloads": "bounce"}},
                {"database": {"url": "mysql://u@db/x"}},
                {"workers": {"gpu": {"enabled": True, "image": "cuda", "devices": "cuda", "gpus": 0}}},
                {"gateway": {"replicas": "two"}},
                {"workers": {"Bad_Name": {"enabled": True, "image": "cpu", "devices": "cpu"}}}):
        with pytest.raises(helm.HelmError):
            render(bad)


# -- KEDA's query on the real stages table ------------------------------------------------------------------------


def test_the_keda_queries_count_each_pools_queued_and_running_stages(postgres_url) -> None:
    psycopg = pytest.importorskip("psycopg")
    database = f"p3d_keda_{secrets.token_hex(4)}"
    admin_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    url = postgres_url.rsplit("/", 1)[0] + f"/{database}"
    store = Store(url)
    try:
        store.create_schema()
        now = time.time()

        def job(model: str | None, *, painted_by: str | None = None) -> str:
            stages = [NewStage("generate_mesh", model)]
            if painted_by:
                stages.append(NewStage("paint_texture", painted_by))
            stages.append(NewStage(EXPORT_STAGE, None, {"format": "glb"}))
            return tr.submit(store, NewJob(owner_id="o", feature="mesh_generation", model_id=model, stages=stages,
                                           request={}), queue_size=100, max_attempts=3, now=now)

        for _ in range(3):
            job("hunyuan3d-2", painted_by="hunyuan3d-2-paint")
        job("trellis2-4b")
        job("builtin_silhouette")
        # one hunyuan3d stage is running (claimed), one trellis2 job has finished its model stage: its export waits
        claim = tr.claim_next_stage(store, worker_id="w1", model_ids=["hunyuan3d-2"], include_export=False,
                                    lease_seconds=30, now=now)
        assert claim is not None
        done = tr.claim_next_stage(store, worker_id="w2", model_ids=["trellis2-4b"], include_export=False,
                                   lease_seconds=30, now=now)
        tr.complete_stage(store, done, [], release=tr.ReleasePolicy(60), now=now)

        queries = {d["metadata"]["name"].rsplit("-", 1)[-1]: d["spec"]["triggers"][0]["metadata"]["query"]
                   for d in of_kind(render(production_values()), "ScaledObject")}
        default_query = of_kind(render(), "ScaledObject")[0]["spec"]["triggers"][0]["metadata"]["query"]
        keda_url = url.replace("postgresql+psycopg://", "postgresql://")  # libpq's form, as KEDA gets it
        with psycopg.connect(keda_url) as conn:
            counts = {pool: conn.execute(q).fetchone()[0] for pool, q in queries.items()}
            everything_on_a_gpu = conn.execute(default_query).fetchone()[0]
        # 3 hunyuan3d-2 stages (one running); trellis2's export and builtin_silhouette's stage wait for CPU pools
        assert counts == {"hunyuan3d": 3, "trellis2": 0, "cpu": 2}
        assert everything_on_a_gpu == 4, "the default GPU pool counts every model stage, not exports"
    finally:
        store.dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database}")


# -- docker compose -----------------------------------------------------------------------------------------------


def test_the_compose_cluster_has_its_parts_and_gives_pocket3d_settings_it_accepts(tmp_path) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "s3", "migrate", "gateway-a", "gateway-b", "worker"} <= set(services)
    roles = {name: s["command"][:3] for name, s in services.items() if str(s.get("image", "")).startswith("pocket3d")}
    assert roles["gateway-a"] == roles["gateway-b"] == ["serve", "--role", "gateway"]
    assert roles["worker"][0] == "worker" and roles["migrate"] == ["db", "upgrade"]
    for name in roles:
        service = services[name]
        settings = assert_settings_load(service["environment"], tmp_path)
        assert settings.storage.backend == "s3" and settings.storage.s3.endpoint == "http://s3:8333"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve().is_file()
    assert services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert json.dumps(services["s3"]["command"]).count("-bucket=pocket3d") == 1


# -- what the files ask of pocket3d's command line ---------------------------------------------------------------

GATEWAY_PATHS = {"/api/v1" + route.path for route in system_router.routes}
WORKER_PATHS = {worker_app.HEALTH_PATH, worker_app.READY_PATH}


def parse_cli(args: list[str]) -> tuple[str, dict]:
    """The command and its parameters as the real ``pocket3d`` command line parses ``args``; click.UsageError for
    an option, a choice or a command it does not have."""
    ctx = pocket3d_cli.make_context("pocket3d", list(args))
    command, path = pocket3d_cli, []
    while isinstance(command, click.Group):
        # until click 9, a group keeps its subcommand's words apart (Context.protected_args, deprecated)
        name, command, rest = command.resolve_command(ctx, [*getattr(ctx, "_protected_args", ()), *ctx.args])
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    return " ".join(path), ctx.params


def listens(params: dict, settings: Settings) -> tuple[str, int]:
    """Where the parsed command serves: its --host/--port, else server.host/server.port from its settings."""
    return params.get("host") or settings.server.host, params.get("port") or settings.server.port


def _container_env(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "postgresql+psycopg://u:p@db:5432/d") for e in c.get("env", [])}


def test_the_chart_runs_commands_pocket3d_has_on_the_ports_and_paths_it_serves(tmp_path) -> None:
    for values in ({}, production_values()):
        docs = render(values)
        files = of_kind(docs, "ConfigMap")[0].get("data") or {}
        for deployment in of_kind(docs, "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            env = _container_env(c)
            settings = assert_settings_load(env, tmp_path, files["system.yaml"] if "POCKET3D_CONFIG" in env else None)
            command, params = parse_cli(c["args"])
            host, port = listens(params, settings)
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            probes = [c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in c]
            assert host == "0.0.0.0", f"{c['name']}: the kubelet probes the pod's address, not its loopback"
            assert all(ports[p["port"]] == port for p in probes), (c["name"], ports, port)
            if c["name"] == "gateway":
                assert command == "serve" and params["role"] == "gateway"
                assert {p["path"] for p in probes} <= GATEWAY_PATHS
                hosted = settings.cluster.hosted_models  # pools KEDA may hold at zero still get their jobs
                assert hosted == ["*"] if not values else {"hunyuan3d-2", "trellis2-4b"} <= set(hosted), hosted
            else:
                assert command == "worker"
                assert (params["devices"] == "cuda") == ("pocket3d-cuda" in c["image"]), c["image"]
                assert {p["path"] for p in probes} <= WORKER_PATHS
                assert settings.worker.drain_seconds + 30 <= pod["terminationGracePeriodSeconds"], \
                    "the drain ends before the kubelet's SIGKILL, with time to give the rest back"
        (job,) = of_kind(docs, "Job")
        assert parse_cli(job["spec"]["template"]["spec"]["containers"][0]["args"]) == ("db upgrade",
                                                                                       {"revision": "head"})
    with pytest.raises(click.UsageError):  # the parser is the real one: it refuses what pocket3d lacks
        parse_cli(["worker", "--devices", "gpu"])


def test_the_compose_file_and_the_images_run_commands_pocket3d_has(tmp_path) -> None:
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        if not str(service.get("image", "")).startswith("pocket3d"):
            continue
        env = {k: str(v) for k, v in service["environment"].items()}
        command, params = parse_cli(service["command"])
        if command == "db upgrade":
            continue
        settings = assert_settings_load(env, tmp_path)
        host, port = listens(params, settings)
        # the images' HEALTHCHECK asks POCKET3D_SERVER__PORT (8000 unset) on 127.0.0.1 inside the container
        assert port == int(env.get("POCKET3D_SERVER__PORT", 8000)), (name, port)
        assert host == "0.0.0.0", f"{name}: reachable from the compose network (published ports, Prometheus)"
        if command == "serve":
            assert params["role"] == "gateway" and [p.split(":")[1] for p in service["ports"]] == [str(port)]
        else:
            grace = int(service["stop_grace_period"].removesuffix("m")) * 60
            assert settings.worker.drain_seconds + 30 <= grace, name
    for dockerfile in sorted((DEPLOY / "docker").glob("Dockerfile*")):
        text = dockerfile.read_text()
        command, params = parse_cli(json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1)))
        env_port = re.search(r"POCKET3D_SERVER__PORT=(\d+)", text)
        port = params.get("port") or int(env_port.group(1) if env_port else 8000)
        assert f"EXPOSE {port}" in text, dockerfile.name
        assert params["host"] == "0.0.0.0", dockerfile.name
