"""TEST STAND-IN for UniRig's skin system (upstream src/system/skin.py ``SkinSystem`` and ``reskin``): computes
nothing real.

``SkinSystem(steps_per_epoch, model, ...)``: ``predict_step(batch, batch_idx, dataloader_idx=None)`` returns
``{'skin_pred': [...]}`` from the model, as upstream. ``reskin(sampled_vertices, vertices, parents, faces,
sampled_skin, sample_method='mean', **kwargs)`` carries the sampled points' weights to the vertices: here each
vertex takes its nearest sample's row (upstream: the mean or median of the 7 nearest, then a diffusion step along
the faces' edges, small weights cut at ``threshold``), rows normalised. Its arguments are recorded
(``unirig.reskin``).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from standin_calls import record


class SkinSystem(torch.nn.Module):
    def __init__(self, steps_per_epoch: int, model, output_path=None, record_res=False, val_interval=None,
                 val_start_from=None, scheduler_config=None, optimizer_config=None, loss_config=None):
        super().__init__()
        self.steps_per_epoch, self.model = steps_per_epoch, model

    def predict_step(self, batch, batch_idx, dataloader_idx=None):
        res = self.model.predict_step(batch)
        return {"skin_pred": res} if isinstance(res, list) else res


def reskin(sampled_vertices, vertices, parents, faces, sampled_skin, sample_method="mean", **kwargs):
    assert sample_method in ("mean", "median")
    record("unirig.reskin", sample_method=sample_method, vertices=len(vertices), faces=len(faces),
           joints=int(sampled_skin.shape[1]), parents=[None if p is None else int(p) for p in parents], **kwargs)
    _, nearest = cKDTree(sampled_vertices).query(vertices)
    skin = np.asarray(sampled_skin, dtype=np.float64)[nearest]
    return skin / skin.sum(axis=-1, keepdims=True)
