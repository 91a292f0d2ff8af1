"""Running pocket3d's adapters for real models in the tests: a server whose registry is a test's own YAML,
with the test stand-ins (tests/support/standins) on the path of its device workers, offline."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from server import SUPPORT

STANDINS = SUPPORT / "standins"
TORCHVISION_STANDIN = SUPPORT / "standins_torchvision"
from client_helpers import SHARED  # noqa: E402,F401  (re-exported for the adapter tests)


def torchvision_missing() -> bool:
    """True when no real torchvision is installed (the stand-in, once on this process's path, does not count)."""
    spec = importlib.util.find_spec("torchvision")
    return spec is None or (spec.origin or "").startswith(str(TORCHVISION_STANDIN))


def standin_env(*, standins: bool = True, **extra: str) -> dict[str, str]:
    """Environment for a server (and its device workers): offline hubs, the stand-ins on PYTHONPATH when asked,
    the torchvision stand-in only when the real one is absent."""
    paths = [str(SUPPORT)]
    if standins:
        paths.append(str(STANDINS))
    if torchvision_missing():
        paths.append(str(TORCHVISION_STANDIN))
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = {"PYTHONPATH": os.pathsep.join(paths), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}
    env.update(extra)
    return env


def write_models(directory: Path, text: str) -> Path:
    """A test's own models.yaml (text, with the paths it needs already in it)."""
    path = directory / "models.yaml"
    path.write_text(text)
    return path
