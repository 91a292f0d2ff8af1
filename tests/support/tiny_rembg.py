"""A tiny ONNX "segmentation model" in rembg's model folder, built by the tests themselves.

TEST DOUBLE for the u2netp.onnx rembg uses (pocket3d weights fetch is not run for these tests): one graph with its interface
(an image [1, 3, 320, 320] in, a saliency map [1, 1, 320, 320] first out) that scores each pixel by how dark it
is, plus a centred disk (objects are framed in the middle, and the random pictures of the tiny text-to-image
double have no object of their own to find). rembg's own session, normalisation, mask post-processing and
cut-out run on it for real (with ``MODEL_CHECKSUM_DISABLED=1``, as its checksum is not u2net's), so an object
darker than a white background is cut out where it overlaps the disk.
"""

from __future__ import annotations

from pathlib import Path


def build(folder: Path, name: str = "u2netp") -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    yy, xx = np.mgrid[0:320, 0:320]
    disk = (np.hypot(yy - 159.5, xx - 159.5) < 0.42 * 320).astype(np.float32)[None, None]

    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])
    saliency = helper.make_tensor_value_info("saliency", TensorProto.FLOAT, [1, 1, 320, 320])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input.1", "axes"], ["brightness"], keepdims=1),
         helper.make_node("Neg", ["brightness"], ["darkness"]),
         helper.make_node("Add", ["darkness", "centre"], ["saliency"])],
        "tiny_saliency", [image], [saliency], initializer=[axes, numpy_helper.from_array(disk, "centre")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="pocket3d-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return folder
