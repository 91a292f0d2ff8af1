"""The API documents itself, offline: /docs and /redoc load only from the server itself, the OpenAPI document is
valid, every operation follows the conventions of ``pocket3d.api.openapi``, and every request example in it passes
its own schema and works when sent as it is to a server with the shipped registry."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from server import ROOT, ServerProcess

PLACEHOLDER_FILE = "file_01JD8X2K9Q4R7T1V3W5Y8Z0A2B"  # the uploaded-file examples' id: exists on no server
INTERNAL_WORDS = re.compile(r"seed design|\bTODO\b|\bFIXME\b|\bXXX\b|\bwave \d", re.IGNORECASE)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on the shipped registry (config/models.yaml): the examples must work against the built-ins."""
    proc = ServerProcess(tmp_path_factory.mktemp("docs") / "data", models=ROOT / "config" / "models.yaml").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def spec(shipped: ServerProcess) -> dict:
    r = httpx.get(f"{shipped.url}/openapi.json", timeout=30)
    assert r.status_code == 200
    return r.json()


def _operations(spec: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_the_document_is_valid_openapi(spec: dict) -> None:
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_every_operation_is_named_described_and_declares_its_answers(spec: dict) -> None:
    ids = []
    for method, path, op in _operations(spec):
        where = f"{method.upper()} {path}"
        op_id = op.get("operationId", "")
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)+", op_id), f"{where}: explicit lowerCamelCase operationId, " \
            f"not {op_id!r}"
        ids.append(op_id)
        assert op.get("summary") and op.get("description"), f"{where}: a summary and a description"
        assert op.get("tags"), f"{where}: a tag"
        for status, response in op["responses"].items():
            for media, content in response.get("content", {}).items():
                if status.startswith(("4", "5")):
                    assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, f"{where} {status}"
                assert "schema" in content, f"{where} {status} {media}: a schema"
        body = op.get("requestBody")
        if body is not None:
            for media, content in body["content"].items():
                assert content.get("schema"), f"{where}: the request body's schema"
                if media == "application/json":
                    assert content.get("examples"), f"{where}: request examples"
    assert len(ids) == len(set(ids)), "operationIds are unique"
    assert {"createMeshJob", "createTextureJob", "createSegmentationJob", "createRiggingJob", "getJob", "listJobs",
            "cancelJob", "downloadJobOutput", "streamJobEvents", "uploadFile", "listModels"} <= set(ids)


def test_closed_sets_are_enums_and_media_types_are_declared(spec: dict) -> None:
    schemas = spec["components"]["schemas"]
    assert {"queued", "running", "succeeded", "failed", "cancelled"} == set(schemas["JobStatus"]["enum"])
    assert schemas["JobView"]["properties"]["status"] == {"$ref": "#/components/schemas/JobStatus"}
    assert schemas["JobView"]["properties"]["feature"] == {"$ref": "#/components/schemas/JobFeature"}
    assert set(schemas["JobFeature"]["enum"]) == {"mesh_generation", "texture_generation", "segmentation",
                                                  "auto_rigging"}
    assert "FILE_NOT_FOUND" in schemas["ErrorCode"]["enum"] and "MODEL_ERROR" in schemas["ErrorCode"]["enum"]
    assert schemas["ErrorBody"]["properties"]["error_code"]["$ref"] == "#/components/schemas/ErrorCode"
    assert schemas["JobError"]["properties"]["code"]["$ref"] == "#/components/schemas/ErrorCode"
    assert set(schemas["MeshGenerationRequest"]["properties"]["output_format"]["enum"]) >= {"glb", "fbx", "usdz"}
    assert "HTTPValidationError" not in schemas, "errors have one shape: ErrorBody"

    paths = spec["paths"]
    upload = paths["/api/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["file"] and upload["properties"]["file"]["type"] == "string"
    assert "text/event-stream" in paths["/api/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    download = paths["/api/v1/jobs/{job_id}/outputs/{name}"]["get"]["responses"]
    assert "model/gltf-binary" in download["200"]["content"] and "206" in download and "304" in download
    devices = paths["/api/v1/system/devices"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert devices["items"] == {"$ref": "#/components/schemas/DeviceInfo"}

    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert paths["/api/v1/jobs"]["get"]["security"] and "security" not in paths["/api/v1/system/health"]["get"]


def test_public_text_has_no_internal_words(spec: dict) -> None:
    found = INTERNAL_WORDS.findall(str(spec))
    assert not found, found


def _request_examples(spec: dict) -> Iterator[tuple[str, str, dict, dict]]:
    for method, path, op in _operations(spec):
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if content:
            for name, example in content["examples"].items():
                yield f"{op['operationId']}:{name}", path, content["schema"], example["value"]


def test_every_request_example_passes_its_own_schema(spec: dict) -> None:
    checked = 0
    for name, _, schema, value in _request_examples(spec):
        # The example's schema, with the document's components beside it so its $refs resolve.
        root = {**schema, "components": spec["components"]}
        errors = list(jsonschema.Draft202012Validator(root).iter_errors(value))
        assert not errors, f"{name}: {[e.message for e in errors]}"
        checked += 1
    assert checked >= 8


def test_every_request_example_works_as_it_is(shipped: ServerProcess, spec: dict) -> None:
    """What "Try it out" sends: inline examples make a job that succeeds; the uploaded-file ones name an id that
    exists on no server, which the answer says how to fix."""
    with httpx.Client(base_url=shipped.url, timeout=120) as client:
        for name, path, _, value in _request_examples(spec):
            if path == "/api/v1/webhooks":
                continue  # registering resolves the URL's host, and tests ask no DNS (tests/test_webhooks.py)
            r = client.post(path, params={"wait": 60}, json=value)
            if PLACEHOLDER_FILE in str(value):
                assert r.status_code == 404 and r.json()["error_code"] == "FILE_NOT_FOUND", (name, r.text)
                assert "POST /api/v1/files" in r.json()["hint"]
                continue
            if "job_" in str(value) or "{job_id}" in path:  # a job of another server: named, and not found here
                assert r.status_code == 404 and r.json()["error_code"] == "JOB_NOT_FOUND", (name, r.text)
                assert "GET /api/v1/jobs" in r.json()["hint"]
                continue
            assert r.status_code == 200, (name, r.text)
            job = r.json()
            assert job["status"] == "succeeded", (name, job)
            assert any(o["name"].startswith("model.") for o in job["outputs"]), (name, job["outputs"])


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_from_the_server_itself(shipped: ServerProcess, page: str) -> None:
    with httpx.Client(base_url=shipped.url, timeout=30) as client:
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        html = r.text
        parser = _Refs()
        parser.feed(html)
        # Also what the page's script hands the viewer: the spec URL, and no other host in the page at all.
        inline_urls = re.findall(r"""(?:url|spec-url)\s*[:=]\s*['"]([^'"]+)['"]""", html)
        assert not re.findall(r"https?://", html), f"{page} names another host: {re.findall(r'https?://[^ ]+', html)}"
        refs = parser.refs + inline_urls
        assert any(ref.endswith(".js") for ref in refs), refs
        for ref in refs:
            url = urljoin(f"{shipped.url}{page}", ref)
            assert urlsplit(url).netloc == urlsplit(shipped.url).netloc, ref
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, (ref, asset.status_code)
        if page == "/docs":
            assert '"validatorUrl": null' in html, "no validator badge: it would send the spec to another host"


def test_the_root_serves_the_web_app_from_the_server_alone(shipped: ServerProcess) -> None:
    with httpx.Client(base_url=shipped.url, timeout=30) as client:
        r = client.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        parser = _Refs()
        parser.feed(r.text)
        imports = json.loads(re.search(r'<script type="importmap">(.*?)</script>', r.text, re.DOTALL).group(1))
        assert "docs" in parser.refs, "the app links the API docs"
        refs = [ref for ref in parser.refs if ref != "docs"] + [
            url if url.endswith(".js") else url + "loaders/GLTFLoader.js" for url in imports["imports"].values()]
        assert not re.findall(r"https?://", r.text)
        for ref in refs:
            url = urljoin(f"{shipped.url}/", ref)
            assert urlsplit(url).netloc == urlsplit(shipped.url).netloc, ref
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, (ref, asset.status_code)


@pytest.mark.browser
def test_the_docs_in_a_browser_ask_no_other_host_and_upload_through_try_it_out(shipped: ServerProcess) -> None:
    """What a person on a host without internet sees: Swagger UI and ReDoc render from the server alone (no request
    elsewhere, no console error: ReDoc's footer logo came from Redocly's CDN), Swagger UI has the Authorize button,
    and "Try it out" on POST /files uploads a file picked in the browser."""
    from browser import PageGuard, launch_chromium

    with launch_chromium() as browser:
        page = browser.new_page()
        guard = PageGuard(page, shipped.url)
        page.goto(f"{shipped.url}/redoc")
        page.get_by_role("heading", name="Upload an image or a mesh").first.wait_for()
        page.wait_for_load_state("networkidle")
        guard.check()

        page.goto(f"{shipped.url}/docs#/Files/uploadFile")
        page.locator("button.authorize").wait_for()
        upload = page.locator("#operations-Files-uploadFile")
        upload.locator("button.try-out__btn").click()
        upload.locator("input[type=file]").set_input_files(str(ROOT.parent / "shared" / "testdata" / "images" /
                                                               "T.png"))
        upload.locator("button.execute").click()
        status = upload.locator(".live-responses-table tbody .response-col_status")
        status.wait_for()
        assert status.inner_text().strip() == "201"
        assert '"file_id": "file_' in upload.locator(".live-responses-table .microlight").first.inner_text()
        page.wait_for_load_state("networkidle")
        guard.check()
