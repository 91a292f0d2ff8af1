"""The request examples the API documents: each one works as it is in /docs ("Try it out") against a server with
the built-in models, so the inputs are inline data URIs (a small picture, a small mesh) rather than file ids that
exist on no other server. tests/test_openapi.py validates every example against its schema and submits it."""

from __future__ import annotations

import base64
import io
from functools import cache
from typing import Any


@cache
def image_data_uri() -> str:
    """A 64 px PNG of a red egg shape on a transparent background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((12, 6, 52, 58), fill=(200, 60, 40, 255))
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@cache
def mesh_data_uri() -> str:
    """A closed, upright capsule of 128 triangles as OBJ (glTF's Y-up)."""
    import numpy as np
    import trimesh

    capsule = trimesh.creation.capsule(height=1.2, radius=0.3, count=[8, 8])
    capsule.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # Z-up to Y-up
    lines = [f"v {x:.3f} {y:.3f} {z:.3f}" for x, y, z in capsule.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in capsule.faces]
    return "data:model/obj;base64," + base64.b64encode(("\n".join(lines) + "\n").encode()).decode()


def _example(summary: str, value: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "value": value}
    if description:
        out["description"] = description
    return out


UPLOADED = ("Upload the file first (POST /api/v1/files) and put the file_id it answers here; this example's id "
            "exists on no server, so it answers 404 FILE_NOT_FOUND as it is.")


def mesh_generation() -> dict[str, dict[str, Any]]:
    return {
        "text": _example("From a text prompt", {"text_prompt": "a red wooden chair", "output_format": "glb"}),
        "image": _example("From an image (inline)", {"images": [image_data_uri()], "output_format": "glb",
                                                     "quality": "medium", "seed": 7}),
        "uploaded_image": _example("From an uploaded image", {"images": ["file_01JD8X2K9Q4R7T1V3W5Y8Z0A2B"],
                                                              "output_format": "glb"}, UPLOADED),
        "views": _example("From named views (inline)", {"views": {"front": image_data_uri(),
                                                                  "left": image_data_uri()}},
                          "Views of one object by name (front, left, back, right; left is the object's own left "
                          "side), as Tripo takes them; the face goes on the front."),
    }


def texture_generation() -> dict[str, dict[str, Any]]:
    return {
        "text": _example("Paint a mesh from a text prompt", {"mesh": mesh_data_uri(),
                                                             "text_prompt": "weathered blue ceramic"}),
        "image": _example("Paint a mesh from a reference image", {"mesh": mesh_data_uri(),
                                                                  "images": [image_data_uri()]}),
    }


def segmentation() -> dict[str, dict[str, Any]]:
    return {
        "inline": _example("Split a mesh into parts", {"mesh": mesh_data_uri(), "output_format": "glb"}),
        "uploaded_mesh": _example("Split an uploaded mesh", {"mesh": "file_01JD8X2K9Q4R7T1V3W5Y8Z0A2B"}, UPLOADED),
    }


def rigging() -> dict[str, dict[str, Any]]:
    return {
        "inline": _example("Rig a mesh", {"mesh": mesh_data_uri(), "output_format": "glb"}),
        "fbx": _example("Rig an uploaded mesh, as FBX", {"mesh": "file_01JD8X2K9Q4R7T1V3W5Y8Z0A2B",
                                                         "output_format": "fbx"}, UPLOADED),
        "chained": _example("Rig the mesh another job made, as GLB and FBX",
                            {"mesh": f"{EXAMPLE_JOB}/model.glb", "output_formats": ["glb", "fbx"]}, CHAINED),
    }


EXAMPLE_JOB = "job_01JD8X4T0M5Q3V7W9Y2B6C8E1F"
CHAINED = ("Name a succeeded job's output (job_id/name from its outputs) instead of downloading and uploading it; "
           "this example's job exists on no server, so it answers 404 JOB_NOT_FOUND as it is.")


def conversion() -> dict[str, dict[str, Any]]:
    return {"formats": _example("Other formats of a finished job's result", {"output_formats": ["fbx", "usdz"]},
                                "The job in the path must have succeeded; its model does not run again.")}


def webhook_endpoint() -> dict[str, dict[str, Any]]:
    return {
        "finished": _example("Every job that ends", {"url": "https://example.com/hooks/pocket3d",
                                                     "events": ["job.succeeded", "job.failed", "job.cancelled"],
                                                     "description": "production"}),
        "failures": _example("Failures only, with progress", {"url": "https://example.com/hooks/alerts",
                                                              "events": ["job.failed", "job.progress"]}),
    }
