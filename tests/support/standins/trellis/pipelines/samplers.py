"""TEST STAND-IN for TRELLIS's samplers (upstream trellis/pipelines/samplers/flow_euler.py): computes nothing
real.

``FlowEulerGuidanceIntervalSampler.sample(model, noise, cond, neg_cond=None, steps=50, rescale_t=1.0,
cfg_strength=3.0, cfg_interval=(0.0, 1.0), verbose=True, **kwargs)`` walks the same time grid as upstream and
calls ``self.sample_once(model, x_t, t, t_prev, cond, **kwargs)`` once per step, as upstream's loop does; each
step only nudges the sample. The calls are recorded (``trellis.sampler``) with the steps and guidance used.
"""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import numpy as np
from standin_calls import record


class FlowEulerSampler:
    def __init__(self, sigma_min: float = 1e-5) -> None:
        self.sigma_min = sigma_min

    def sample_once(self, model: Any, x_t: Any, t: float, t_prev: float, cond: Any = None, **kwargs: Any) -> Any:
        pred_x_prev = x_t * (1 - 0.01 * (t - t_prev))
        return SimpleNamespace(pred_x_prev=pred_x_prev, pred_x_0=pred_x_prev)

    def sample(self, model: Any, noise: Any, cond: Any = None, steps: int = 50, rescale_t: float = 1.0,
               verbose: bool = True, **kwargs: Any) -> Any:
        t_seq = np.linspace(1, 0, steps + 1)
        t_seq = rescale_t * t_seq / (1 + (rescale_t - 1) * t_seq)
        sample = noise
        for t, t_prev in pairwise(t_seq):
            sample = self.sample_once(model, sample, float(t), float(t_prev), cond, **kwargs).pred_x_prev
        return SimpleNamespace(samples=sample, pred_x_t=[], pred_x_0=[])


class FlowEulerGuidanceIntervalSampler(FlowEulerSampler):
    def sample(self, model: Any, noise: Any, cond: Any = None, neg_cond: Any = None, steps: int = 50,
               rescale_t: float = 1.0, cfg_strength: float = 3.0, cfg_interval: tuple = (0.0, 1.0),
               verbose: bool = True, **kwargs: Any) -> Any:
        record("trellis.sampler", steps=steps, cfg_strength=cfg_strength, cfg_interval=list(cfg_interval),
               rescale_t=rescale_t)
        return super().sample(model, noise, cond, steps, rescale_t, verbose, neg_cond=neg_cond,
                              cfg_strength=cfg_strength, cfg_interval=cfg_interval, **kwargs)


FlowEulerCfgSampler = FlowEulerGuidanceIntervalSampler
