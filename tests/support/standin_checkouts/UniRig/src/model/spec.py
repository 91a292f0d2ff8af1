"""TEST STAND-IN for UniRig's model base (upstream src/model/spec.py ``ModelInput`` and ``ModelSpec``, a
LightningModule there, a torch Module here): computes nothing real.

``ModelSpec._process_fn(batch)`` builds upstream's per-item dict: ``cls``, ``path``, ``data_name``, ``joints``,
``tails``, ``parents`` (-1 for the root), ``num_bones`` when the asset has a skeleton; ``vertices`` and ``normals``
(sampled), ``num_points``, ``origin_vertices``, ``origin_vertex_normals``, ``num_faces``, ``origin_faces``,
``origin_face_normals`` (the asset as transformed, padded), on top of the model's own ``process_fn``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ModelInput:
    tokens: np.ndarray | None = None
    pad: int | None = None
    vertices: np.ndarray | None = None
    normals: np.ndarray | None = None
    joints: np.ndarray | None = None
    tails: np.ndarray | None = None
    asset: object | None = None
    augments: object | None = None


class ModelSpec(torch.nn.Module):
    def _process_fn(self, batch: list[ModelInput]) -> list[dict]:
        n_batch = self.process_fn(batch)
        max_bones = max((b.asset.J for b in batch if b.joints is not None), default=0)
        max_points = max(b.asset.N for b in batch)
        max_faces = max(b.asset.F for b in batch)
        for item, b in zip(n_batch, batch, strict=True):
            asset = b.asset
            item.update(cls=asset.cls, path=asset.path, data_name=asset.data_name)
            if asset.joints is not None:
                item["joints"] = np.pad(asset.joints, ((0, max_bones - asset.J), (0, 0)))
                item["num_bones"] = asset.J
            if asset.tails is not None:
                item["tails"] = np.pad(asset.tails, ((0, max_bones - asset.J), (0, 0)))
            if asset.parents is not None:
                parents = np.array([-1 if p is None else int(p) for p in asset.parents])
                item["parents"] = np.pad(parents, (0, max_bones - asset.J), constant_values=-1)
            item.update(vertices=b.vertices, normals=b.normals, num_points=asset.N, num_faces=asset.F,
                        origin_vertices=np.pad(asset.vertices, ((0, max_points - asset.N), (0, 0))),
                        origin_vertex_normals=np.pad(asset.vertex_normals, ((0, max_points - asset.N), (0, 0))),
                        origin_faces=np.pad(asset.faces, ((0, max_faces - asset.F), (0, 0))),
                        origin_face_normals=np.pad(asset.face_normals, ((0, max_faces - asset.F), (0, 0))))
        return n_batch

    def process_fn(self, batch: list[ModelInput]) -> list[dict]:
        raise NotImplementedError
