"""What an input file is, judged by its content, never by its name or the client's Content-Type."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pocket3d import geometry
from pocket3d.geometry.formats import fbx, fbx_check
from pocket3d.errors import ErrorCode, Pocket3DError

IMAGE_MEDIA = {"PNG": ("png", "image/png"), "JPEG": ("jpeg", "image/jpeg"), "WEBP": ("webp", "image/webp")}
MESH_MEDIA = {"glb": "model/gltf-binary", "gltf": "model/gltf+json", "obj": "model/obj", "ply": "application/ply",
              "stl": "model/stl", "fbx": "application/octet-stream"}


@dataclass(frozen=True)
class Media:
    kind: str  # image | mesh
    format: str
    media_type: str


def sniff(head: bytes, size: int) -> tuple[str, str] | None:
    """(kind, format) from the first bytes of a file, or None when it is nothing pocket3d takes."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head.startswith(b"glTF"):
        return "mesh", "glb"
    if head.startswith(b"Kaydara FBX Binary"):
        return "mesh", "fbx"
    if head.startswith(b"ply\n") or head.startswith(b"ply\r\n"):
        return "mesh", "ply"
    if size >= 84 and len(head) >= 84 and 84 + 50 * int.from_bytes(head[80:84], "little") == size:
        return "mesh", "stl"  # binary STL: an 80-byte header, a count, then 50 bytes a triangle
    if b"\x00" in head:
        return None
    text = head.decode("utf-8", errors="ignore")  # the 4 KiB cut may split a character: ignore just that
    stripped = text.lstrip()
    if stripped.startswith("solid") and "facet" in text:
        return "mesh", "stl"
    if stripped.startswith("{") and '"asset"' in text:
        return "mesh", "gltf"
    if stripped.startswith("; FBX"):
        return "mesh", "fbx"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and all(ln.split()[0] in {"v", "vt", "vn", "f", "o", "g", "s", "mtllib", "usemtl", "l", "vp"}
                     for ln in lines[:-1] or lines):
        return "mesh", "obj"
    return None


def inspect(path: Path, max_image_pixels: int, mesh_limits: geometry.MeshLimits = geometry.MeshLimits()) -> Media:
    """Sniff and validate a stored file; raises a 4xx Pocket3DError that names what is wrong."""
    size = path.stat().st_size
    if size == 0:
        raise Pocket3DError(ErrorCode.EMPTY_UPLOAD, "the file is empty")
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(ZIP):
        return _check_mesh_zip(path, mesh_limits)
    found = sniff(head, size)
    if found is None:
        raise Pocket3DError(ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                            "not an image (PNG, JPEG, WebP), a mesh (GLB, glTF, OBJ, PLY, STL, FBX) or a zip of an "
                            "OBJ or glTF with its files",
                            hint="convert it to PNG (an image) or GLB (a mesh) and send it again")
    kind, fmt = found
    if kind == "image":
        return _check_image(path, max_image_pixels)
    # Checked by loading it, where a reader is installed here; FBX without Blender's environment, for models that
    # read FBX themselves, passes on its records' structure alone (ASCII FBX on its signature).
    try:
        if fmt in geometry.LOADABLE and not (fmt == "fbx" and geometry.FORMATS["fbx"].unavailable):
            with fbx.for_requests():  # an upload does not wait long for Blender
                geometry.load_scene(path, fmt, mesh_limits)
        elif fmt == "fbx":
            fbx_check.check(path, ascii_ok=True)
    except geometry.MeshError as e:
        retry = e.details.get("retry_after")
        raise Pocket3DError(e.code, str(e), {"format": fmt, **e.details}, hint=e.hint or _alone_hint(fmt, e),
                            headers={"Retry-After": str(retry)} if retry else None) from None
    return Media("mesh", fmt, MESH_MEDIA[fmt])


ZIP = b"PK\x03\x04"


def _check_mesh_zip(path: Path, limits: geometry.MeshLimits) -> Media:
    """An OBJ or glTF with the files it names, in one zip: checked as the models will read it."""
    try:
        fmt = geometry.zip_format(path, limits)
        geometry.load_scene(path, fmt, limits)
    except geometry.MeshError as e:
        raise Pocket3DError(e.code, str(e), {"format": "zip", **e.details}, hint=e.hint) from None
    return Media("mesh", fmt, "application/zip")


def _alone_hint(fmt: str, e: geometry.MeshError) -> str | None:
    """A glTF or OBJ that names files of its own: they come with it in a zip."""
    if fmt in ("gltf", "obj") and "refers to another file" in str(e):
        return f"upload the {fmt.upper()} and the files it names as one zip"
    return None


def _check_image(path: Path, max_pixels: int) -> Media:
    try:
        with Image.open(path) as im:
            fmt = im.format or ""
            width, height = im.size
            if width * height > max_pixels:
                side = int(max_pixels ** 0.5)
                raise Pocket3DError(ErrorCode.IMAGE_TOO_LARGE,
                                    f"the image is {width}x{height}; at most {max_pixels} pixels are accepted",
                                    {"width": width, "height": height, "max_pixels": max_pixels},
                                    hint=f"downscale it (to {side}x{side} or less) and send it again; the models "
                                    "work at 512-1024 px anyway")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im.load()  # decodes every pixel: catches truncated and corrupt files
    except Pocket3DError:
        raise
    except Exception as e:  # Pillow names the temp file it read: keep server paths out of the answer
        reason = str(e).replace(f"'{path}'", "").replace(str(path), "the file").strip()
        raise Pocket3DError(ErrorCode.INVALID_IMAGE, f"the image does not decode: {reason}") from None
    if fmt not in IMAGE_MEDIA:
        raise Pocket3DError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"image format {fmt} is not accepted",
                            hint="convert it to PNG, JPEG or WebP and send it again")
    short, media_type = IMAGE_MEDIA[fmt]
    return Media("image", short, media_type)
