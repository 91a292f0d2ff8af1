"""A mesh uploaded as one zip with the files it names (a textured OBJ with its MTL and images, a .gltf with its
buffers and images): read from the zip alone, and refused, with the reason, when it is unsafe or incomplete."""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path

import httpx
import pytest
import trimesh
from client_helpers import MESHES, leftover_temp_files, textured_goblin_zip, upload
from PIL import Image


@pytest.fixture(scope="module")
def zip_server(tmp_path_factory: pytest.TempPathFactory):
    """Its own server with a small upload limit, so the zip that unpacks too large stays small."""
    from server import ServerProcess

    proc = ServerProcess(tmp_path_factory.mktemp("zips") / "data",
                         env={"POCKET3D_STORAGE__MAX_FILE_SIZE": "3MB"}).start()
    yield proc
    proc.stop()


def _zip(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)  # the name exactly as given
            info.compress_type = zipfile.ZIP_DEFLATED
            if name == symlink:
                info.external_attr = 0o120777 << 16  # S_IFLNK
            z.writestr(info, data)
    return buf.getvalue()


def _post(client: httpx.Client, data: bytes, name: str = "mesh.zip") -> httpx.Response:
    return client.post("/files", files={"file": (name, data, "application/zip")})


def _textured_gltf_zip() -> bytes:
    """A textured box as a .gltf with its buffer in a .bin and its image in a .png beside it."""
    box = trimesh.creation.box()
    box.visual = trimesh.visual.TextureVisuals(uv=box.vertices[:, :2] + 0.5, image=Image.new("RGB", (8, 8), "green"))
    files = box.export(file_type="gltf")
    gltf = json.loads(files.pop("model.gltf"))
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (20, 160, 40)).save(png, "PNG")
    gltf["images"] = [{"uri": "images/box%20colour.png"}]  # a URI, escaped as glTF wants
    return _zip({"box/model.gltf": json.dumps(gltf).encode(), **{f"box/{k}": v for k, v in files.items()},
                 "box/images/box colour.png": png.getvalue()})


def test_a_textured_obj_and_a_gltf_with_their_files(zip_server, tmp_path: Path) -> None:
    with zip_server.client() as c:
        info = upload(c, textured_goblin_zip(tmp_path / "goblin.zip"))
        assert (info["kind"], info["format"], info["media_type"]) == ("mesh", "obj", "application/zip")
        assert info["filename"] == "goblin.zip"
        r = _post(c, _textured_gltf_zip(), "box.zip")
        assert r.status_code == 201, r.text
        assert (r.json()["format"], r.json()["media_type"]) == ("gltf", "application/zip")
        lone = c.post("/files", files={"file": ("model.gltf", zipfile.ZipFile(io.BytesIO(_textured_gltf_zip()))
                                                .read("box/model.gltf"))})
        assert lone.status_code == 422 and "as one zip" in lone.json()["hint"], lone.text


GOBLIN = (MESHES / "typical_humanoid_goblin.obj").read_bytes()
MTL = b"newmtl material_0\nmap_Kd skin.png\n"
DIGITS = "".join(random.Random(0).choices("0123456789", k=3_200_000)).encode()  # packs about 2.4 to one


@pytest.mark.parametrize(("case", "entries", "symlink", "status", "words"), [
    ("absolute path", {"/etc/model.obj": GOBLIN}, None, 422, "outside itself"),
    ("parent path", {"../model.obj": GOBLIN}, None, 422, "outside itself"),
    ("nested parent path", {"a/../../model.obj": GOBLIN}, None, 422, "outside itself"),
    ("windows path", {"C:\\model.obj": GOBLIN}, None, 422, "outside itself"),
    ("symbolic link", {"model.obj": GOBLIN, "skin.png": b"/etc/passwd"}, "skin.png", 422, "symbolic link"),
    ("too many entries", {"model.obj": GOBLIN, **{f"pad/{i}.txt": b"x" for i in range(300)}}, None, 422,
     "at most 256"),
    ("zip bomb", {"model.obj": GOBLIN, "bomb.png": b"\0" * 20_000_000}, None, 422, "times larger"),
    ("unpacks too large", {"model.obj": GOBLIN, "digits.txt": DIGITS}, None, 413,
     "unpacks to more than"),
    ("missing texture", {"model.obj": b"mtllib m.mtl\n" + GOBLIN, "m.mtl": MTL}, None, 422, "'skin.png'"),
    ("two meshes", {"a.obj": GOBLIN, "b.obj": GOBLIN}, None, 422, "holds 2"),
    ("no mesh", {"readme.txt": b"hello"}, None, 422, "holds none"),
])
def test_unsafe_or_incomplete_zips_are_refused(zip_server, case: str, entries: dict, symlink: str | None,
                                               status: int, words: str) -> None:
    with zip_server.client() as c:
        before = c.get("/files").json()["files"]
        r = _post(c, _zip(entries, symlink=symlink))
        assert r.status_code == status, (case, r.text)
        body = r.json()
        assert body["error_code"] == ("FILE_TOO_LARGE" if status == 413 else "INVALID_ARCHIVE"), (case, body)
        assert words in body["message"], (case, body["message"])
        assert c.get("/files").json()["files"] == before, "nothing stored"
    assert leftover_temp_files(zip_server.data_dir) == []


def test_a_zip_sent_inline_is_checked_the_same(zip_server) -> None:
    import base64

    with zip_server.client() as c:
        bad = "data:application/zip;base64," + base64.b64encode(_zip({"../x.obj": GOBLIN})).decode()
        r = c.post("/segment", json={"mesh": bad})
        assert r.status_code == 422 and r.json()["error_code"] == "INVALID_ARCHIVE", r.text
        assert r.json()["details"]["field"] == "mesh"
