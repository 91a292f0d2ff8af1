"""TEST STAND-IN for UniRig's transform settings (upstream src/data/transform.py ``TransformConfig.parse`` and
``transform_asset``, with src/data/order.py ``OrderConfig.parse``): computes nothing real.

``TransformConfig.parse(config)`` reads the keys upstream reads from a transform's ``predict_transform_config``:
``augment_config.augment_affine_config.normalize_into``, ``sampler_config`` (``num_samples``, ``vertex_samples``),
``vertex_group_config`` (``kwargs.voxel_skin.grid``) and ``order_config.skeleton_path``, whose YAML files it opens
as upstream's OrderConfig.parse does (paths relative to the working directory, as upstream). Each parse is
recorded (``unirig.TransformConfig.parse``).

``transform_asset(asset, config)`` does what upstream's does to an inference asset, the cheap way: the affine
normalisation into ``normalize_into`` (upstream's AugmentAffine formula: the bounding box of the vertices and
joints centred, its longest side scaled to the range), the "voxel_skin" vertex group (here each joint's share of
inverse squared distance, no voxels), and the "mix" sampling (``vertex_samples`` of the mesh's vertices first, then
points on its faces, ``num_samples`` in all, with NumPy's global generator as upstream).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import yaml
from standin_calls import record


@dataclass
class TransformConfig:
    normalize_into: tuple[float, float] | None = None
    num_samples: int = 0
    vertex_samples: int = 0
    vertex_groups: dict = field(default_factory=dict)  # name -> kwargs
    skeletons: dict = field(default_factory=dict)  # cls -> the skeleton file's content

    @classmethod
    def parse(cls, config) -> TransformConfig:
        augment = (config.get("augment_config") or {}).get("augment_affine_config") or {}
        sampler = config.get("sampler_config") or {}
        groups = config.get("vertex_group_config") or {}
        skeletons = {}
        for name, path in ((config.get("order_config") or {}).get("skeleton_path") or {}).items():
            with open(path) as f:
                skeletons[name] = yaml.safe_load(f)
        kwargs = groups.get("kwargs") or {}
        out = cls(normalize_into=tuple(augment["normalize_into"]) if "normalize_into" in augment else None,
                  num_samples=int(sampler.get("num_samples", 0)), vertex_samples=int(sampler.get("vertex_samples", 0)),
                  vertex_groups={name: dict(kwargs.get(name) or {}) for name in groups.get("names", [])},
                  skeletons=skeletons)
        record("unirig.TransformConfig.parse", normalize_into=out.normalize_into, num_samples=out.num_samples,
               voxel_skin_grid=out.vertex_groups.get("voxel_skin", {}).get("grid"))
        return out


def transform_asset(asset, transform_config: TransformConfig) -> tuple[list, list]:
    if transform_config.normalize_into is not None:
        lo, hi = transform_config.normalize_into
        points = asset.vertices if asset.joints is None else np.concatenate([asset.vertices, asset.joints])
        low, high = points.min(axis=0), points.max(axis=0)
        scale = float(np.max((high - low) / (hi - lo)))
        centre, bias = (high + low) / 2, (lo + hi) / 2

        def move(p):
            return None if p is None else ((p - centre) / scale + bias).astype(np.float32)

        asset.vertices, asset.joints, asset.tails = move(asset.vertices), move(asset.joints), move(asset.tails)
    asset.vertex_groups = {}
    if "voxel_skin" in transform_config.vertex_groups and asset.joints is not None:
        asset.vertex_groups["voxel_skin"] = _inverse_distance_share(asset.vertices, asset.joints)
    _sample(asset, transform_config)
    return [], []


def _inverse_distance_share(points: np.ndarray, joints: np.ndarray) -> np.ndarray:
    heat = 1.0 / (((points[:, None, :] - joints[None, :, :]) ** 2).sum(axis=2) + 1e-4)
    return (heat / heat.sum(axis=1, keepdims=True)).astype(np.float32)


def _sample(asset, config: TransformConfig) -> None:
    total = config.num_samples or len(asset.vertices)
    from_vertices = np.random.permutation(len(asset.vertices))[:min(config.vertex_samples, total)]
    faces = np.random.choice(len(asset.faces), size=total - len(from_vertices))
    weights = np.random.dirichlet([1.0, 1.0, 1.0], size=len(faces))
    corners = asset.vertices[asset.faces[faces]]
    on_faces = (corners * weights[:, :, None]).sum(axis=1)
    asset.sampled_vertices = np.concatenate([asset.vertices[from_vertices], on_faces]).astype(np.float32)
    asset.sampled_normals = np.concatenate([asset.vertex_normals[from_vertices],
                                            asset.face_normals[faces]]).astype(np.float32)
    asset.sampled_vertex_groups = {name: _inverse_distance_share(asset.sampled_vertices, asset.joints)
                                   for name in asset.vertex_groups}
