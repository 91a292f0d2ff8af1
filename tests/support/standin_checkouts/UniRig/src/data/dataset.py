"""TEST STAND-IN for UniRig's dataset (upstream src/data/dataset.py ``UniRigDataset``, with src/data/asset.py
``Asset.from_raw_data``): computes nothing real.

``UniRigDataset(data=[(cls, folder)], name, process_fn, tokenizer, transform_config, debug=False,
data_name='raw_data.npz')``: ``dataset[i]`` loads ``<folder>/<data_name>`` (RawData), transforms it
(``transform_asset``) and returns a ``ModelInput``; ``collate_fn(items)`` is upstream's
``default_collate(process_fn(items))``. Each item is recorded (``unirig.dataset``: its face and joint counts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from src.data.raw_data import RawData
from src.data.transform import transform_asset
from src.model.spec import ModelInput
from standin_calls import record
from torch.utils.data import Dataset, default_collate


@dataclass
class Asset:
    cls: str
    path: str
    data_name: str
    vertices: np.ndarray
    vertex_normals: np.ndarray
    faces: np.ndarray
    face_normals: np.ndarray
    joints: np.ndarray | None = None
    tails: np.ndarray | None = None
    parents: list | None = None
    names: list | None = None
    vertex_groups: dict | None = None
    sampled_vertices: np.ndarray | None = None
    sampled_normals: np.ndarray | None = None
    sampled_vertex_groups: dict | None = None

    @property
    def N(self) -> int:
        return self.vertices.shape[0]

    @property
    def F(self) -> int:
        return self.faces.shape[0]

    @property
    def J(self) -> int:
        return self.joints.shape[0]

    @staticmethod
    def from_raw_data(raw_data: RawData, cls: str, path: str, data_name: str) -> Asset:
        return Asset(cls=cls, path=path, data_name=data_name, vertices=raw_data.vertices,
                     vertex_normals=raw_data.vertex_normals, faces=raw_data.faces, face_normals=raw_data.face_normals,
                     joints=raw_data.joints, tails=raw_data.tails, parents=raw_data.parents, names=raw_data.names)


class UniRigDataset(Dataset):
    def __init__(self, data: list, name: str, process_fn=None, tokenizer=None, transform_config=None,
                 debug: bool = False, data_name: str = "raw_data.npz") -> None:
        super().__init__()
        self.data, self.name, self.process_fn, self.tokenizer = data, name, process_fn, tokenizer
        self.transform_config, self.debug, self.data_name = transform_config, debug, data_name
        if not debug:
            assert self.process_fn is not None, "missing data processing function"

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx) -> ModelInput:
        cls, dir_path = self.data[idx]
        raw_data = RawData.load(path=os.path.join(dir_path, self.data_name))
        asset = Asset.from_raw_data(raw_data=raw_data, cls=cls, path=dir_path, data_name=self.data_name)
        transform_asset(asset=asset, transform_config=self.transform_config)
        record("unirig.dataset", data_name=self.data_name, cls=cls, vertices=asset.N, faces=asset.F,
               joints=None if asset.joints is None else asset.J)
        return ModelInput(tokens=None, pad=None if self.tokenizer is None else self.tokenizer.pad,
                          vertices=asset.sampled_vertices.astype(np.float32),
                          normals=asset.sampled_normals.astype(np.float32),
                          joints=None if asset.joints is None else asset.joints.astype(np.float32),
                          tails=None if asset.tails is None else asset.tails.astype(np.float32), asset=asset)

    def collate_fn(self, batch):
        return default_collate(self.process_fn(batch))
