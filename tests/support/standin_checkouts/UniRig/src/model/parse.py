"""TEST STAND-IN for UniRig's models (upstream src/model/parse.py ``get_model``, src/model/unirig_ar.py
``UniRigAR`` and src/model/unirig_skin.py ``UniRigSkin``): computes nothing real.

``get_model(**config)`` picks the class by ``__target__`` (``unirig_ar``, ``unirig_skin``) and passes the rest, as
upstream; each construction is recorded (``unirig.get_model``). Each model has one parameter, ``anchor``, so that a
checkpoint's ``state_dict`` (key ``model.anchor`` in the Lightning module) loads into it strictly.

- ``UniRigAR.predict_step(batch)`` reads ``batch['generate_kwargs']`` (deep-copied, ``no_cls``/``use_dir_cls``/
  ``assign_cls`` popped, the rest passed to ``generate`` as upstream passes it to the transformer's ``generate``),
  and ``generate(vertices, normals, cls, **kwargs)`` returns a ``DetokenizeOutput``. Nothing is generated: the
  skeleton is 8 joints placed on the first ``vertex_samples`` sampled points, which are mesh vertices (a root at
  the one nearest their centre, a joint halfway up and one at the top, and one at each other extreme of the three
  axes), "generated" one token per joint coordinate, with the ``stopping_criteria`` called after each token as
  transformers does. The call is recorded (``unirig.generate``: the kwargs, torch's seed, the anchor, the
  joints); when torch's seed is ``FAIL_SEED`` it raises, as a failed generation does.
- ``UniRigSkin.predict_step(batch)`` returns one (sampled points, bones) tensor per item: the batch's
  ``voxel_skin`` prior sharpened, rows summing to 1 (recorded: ``unirig.skin``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from src.model.spec import ModelInput, ModelSpec
from src.tokenizer.spec import DetokenizeOutput
from standin_calls import record

FAIL_SEED = 4040
VERTEX_SAMPLES = 1024  # the first sampled points the stand-in takes for mesh vertices (see the transform configs)


class UniRigAR(ModelSpec):
    def __init__(self, llm, mesh_encoder, **kwargs):
        super().__init__()
        self.tokenizer = kwargs.get("tokenizer")
        self.llm, self.mesh_encoder = llm, mesh_encoder
        self.anchor = torch.nn.Parameter(torch.zeros(3))

    def process_fn(self, batch: list[ModelInput]) -> list[dict]:
        return [{} for _ in batch]

    @torch.no_grad()
    def generate(self, vertices, normals, cls=None, **kwargs) -> DetokenizeOutput:
        points = vertices[:VERTEX_SAMPLES].float().cpu().numpy()
        centre = points.mean(axis=0)
        root = int(np.argmin(np.linalg.norm(points - centre, axis=1)))
        top = int(np.argmax(points[:, 2]))
        halfway = int(np.argmin(np.linalg.norm(points - (points[root] + points[top]) / 2, axis=1)))
        others = [int(np.argmin(points[:, 2])), int(np.argmax(points[:, 0])), int(np.argmin(points[:, 0])),
                  int(np.argmax(points[:, 1])), int(np.argmin(points[:, 1]))]
        chosen = [root, halfway, top, *others]
        parents = [None, 0, 1, 0, 0, 0, 0, 0]
        joints = points[chosen]
        stopping = kwargs.get("stopping_criteria")
        input_ids = torch.zeros((kwargs.get("num_beams", 1), 1), dtype=torch.long, device=vertices.device)
        for _ in range(3 * len(joints)):
            input_ids = torch.cat([input_ids, input_ids[:, -1:] + 1], dim=1)
            if stopping is not None and bool(stopping(input_ids, None).all()):
                break
        seed = torch.initial_seed()
        record("unirig.generate", cls=cls, seed=seed, num_beams=kwargs.get("num_beams"),
               kwargs=sorted(kwargs), stopping_criteria=type(stopping).__name__, anchor=self.anchor.tolist(),
               sampled_points=int(vertices.shape[0]), joints=joints.tolist(), parents=parents,
               device=str(vertices.device))
        if seed == FAIL_SEED:
            raise RuntimeError(f"the UniRig stand-in fails on seed {FAIL_SEED}, as asked")
        heads = np.array([joints[p] if p is not None else joints[i] for i, p in enumerate(parents)])
        children = {p: i for i, p in enumerate(parents) if p is not None}
        tails = np.array([joints[children[i]] if i in children else joints[i] + [0.0, 0.0, 0.05]
                          for i in range(len(joints))])
        return DetokenizeOutput(tokens=input_ids[0].cpu().numpy(), bones=np.concatenate([heads, joints], axis=1),
                                parents=parents, tails=tails, no_skin=None, cls=cls, parts=[None],
                                names=[f"bone_{i}" for i in range(len(joints))], continuous_range=(-1.0, 1.0))

    def predict_step(self, batch: dict, no_cls: bool = False):
        generate_kwargs = copy.deepcopy(batch["generate_kwargs"])
        no_cls = generate_kwargs.pop("no_cls", False)
        use_dir_cls = generate_kwargs.pop("use_dir_cls", False)
        assign_cls = generate_kwargs.pop("assign_cls", None)
        vertices, normals = batch["vertices"], batch["normals"]
        outputs = []
        for i in range(vertices.shape[0]):
            cls = None if no_cls else assign_cls if assign_cls is not None else \
                batch["path"][i].split("/")[0] if use_dir_cls else batch["cls"][i]
            outputs.append(self.generate(vertices=vertices[i], normals=normals[i], cls=cls, **generate_kwargs))
        return outputs


class UniRigSkin(ModelSpec):
    def __init__(self, mesh_encoder, global_encoder, **kwargs):
        super().__init__()
        self.mesh_encoder, self.global_encoder, self.voxel_mask = mesh_encoder, global_encoder, kwargs["voxel_mask"]
        self.anchor = torch.nn.Parameter(torch.zeros(3))

    def process_fn(self, batch: list[ModelInput]) -> list[dict]:
        max_bones = max(b.asset.J for b in batch)
        out = []
        for b in batch:
            voxel_skin = b.asset.sampled_vertex_groups["voxel_skin"]
            voxel_skin = np.pad(voxel_skin, ((0, 0), (0, max_bones - b.asset.J)))
            out.append({"voxel_skin": voxel_skin, "skin": np.zeros_like(voxel_skin), "offset": len(b.vertices)})
        return out

    def predict_step(self, batch: dict):
        with torch.no_grad():
            outputs = []
            for i in range(batch["vertices"].shape[0]):
                bones = int(batch["num_bones"][i])
                prior = batch["voxel_skin"][i, :, :bones].float() ** float(self.voxel_mask)
                outputs.append(prior / prior.sum(dim=-1, keepdim=True))
            record("unirig.skin", num_bones=[int(n) for n in batch["num_bones"]], anchor=self.anchor.tolist(),
                   sampled_points=int(batch["vertices"].shape[1]), device=str(batch["vertices"].device))
            return outputs


def get_model(**kwargs) -> ModelSpec:
    classes = {"unirig_ar": UniRigAR, "unirig_skin": UniRigSkin}
    target = kwargs.pop("__target__")
    assert target in classes, f"expect: [{','.join(classes)}], found: {target}"
    record("unirig.get_model", target=target)
    return classes[target](**kwargs)
