"""Configuration: YAML, then POCKET3D_* environment, then CLI flags; bad values stop start-up by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from server import cli

from pocket3d.config import ConfigError, load_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_embedded_defaults_without_any_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for k in [k for k in __import__("os").environ if k.startswith("POCKET3D_")]:
        monkeypatch.delenv(k)
    s = load_settings()
    assert s.server.host == "127.0.0.1" and s.server.port == 8000 and not s.auth.enabled
    assert s.data_dir == Path("data") and s.db_url.startswith("sqlite:///") and s.db_url.endswith("data/pocket3d.db")


def test_precedence_file_then_env_then_flags(tmp_path, monkeypatch) -> None:
    cfg = write(tmp_path / "system.yaml", """
server: {host: "127.0.0.2", port: 9000, max_request_size: 5MB}
scheduler: {concurrency: 3}
storage: {cleanup_after: 7200}
""")
    monkeypatch.setenv("POCKET3D_SCHEDULER__CONCURRENCY", "5")
    monkeypatch.setenv("POCKET3D_DATA_DIR", str(tmp_path / "d"))
    s = load_settings(cfg, server={"port": 9100})
    assert s.server.port == 9100, "a flag beats the file"
    assert s.server.host == "127.0.0.2", "a flag for one key keeps the file's other keys in that section"
    assert s.server.max_request_size == 5_000_000
    assert s.scheduler.concurrency == 5, "the environment beats the file"
    assert s.storage.cleanup_after == 7200 and s.data_dir == tmp_path / "d"


@pytest.mark.parametrize("text,key,reason", [
    ("server: {port: 70000}", "server.port", "less than or equal to 65535"),
    ("scheduler: {max_attempts: 0}", "scheduler.max_attempts", "greater than or equal to 1"),
    ("server: {prot: 80}", "server.prot", "unknown key"),
    ("storage: {max_file_size: lots}", "storage.max_file_size", "byte"),
    ("server: {cors_origins: ['*'], cors_allow_credentials: true}", "server", "cannot be combined"),
    ("logging: {level: LOUD}", "logging.level", "DEBUG"),
])
def test_bad_values_name_the_key_and_the_reason(tmp_path, text: str, key: str, reason: str) -> None:
    cfg = write(tmp_path / "system.yaml", text)
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert f"  {key}:" in str(e.value) and reason in str(e.value) and str(cfg) in str(e.value)


def test_bad_env_value_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("POCKET3D_SERVER__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"server\.port: .*integer"):
        load_settings(write(tmp_path / "s.yaml", "{}"))


def test_not_yaml_and_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path / "s.yaml", "server: [port: 1"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.yaml")


def test_serve_stops_at_startup_with_the_message(tmp_path) -> None:
    cfg = write(tmp_path / "s.yaml", "scheduler:\n  queue_size: -1\n")
    r = cli(tmp_path / "data", "serve", config=cfg, check=False)
    assert r.returncode == 1
    assert "scheduler.queue_size" in r.stderr and "greater than or equal to 1" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_models_file_stops_startup(tmp_path) -> None:
    models = write(tmp_path / "models.yaml", """
models:
  mesh_generation:
    m1:
      class: "p3d_testmodels:HeightfieldTestModel"
      supported_inputs: ["image", "smell"]
      supported_outputs: ["glb"]
      vram_requirment: 10
""")
    r = cli(tmp_path / "data", "serve", models=models, check=False)
    assert r.returncode == 1
    assert "models.mesh_generation.m1.supported_inputs" in r.stderr and "smell" in r.stderr
    assert "models.mesh_generation.m1.vram_requirment: unknown key" in r.stderr
