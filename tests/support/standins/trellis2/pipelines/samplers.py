"""TEST STAND-IN for TRELLIS.2's samplers (upstream trellis2/pipelines/samplers/flow_euler.py with
classifier_free_guidance_mixin.py and guidance_interval_mixin.py): computes nothing real.

``FlowEulerGuidanceIntervalSampler.sample(model, noise, cond, neg_cond=None, steps=50, rescale_t=1.0,
guidance_strength=3.0, guidance_rescale=0.0, guidance_interval=(0.0, 1.0), verbose=True, tqdm_desc="Sampling",
**kwargs)`` walks upstream's time grid and calls ``self.sample_once(...)`` once per step, as upstream's loop does.
Calls are recorded (``trellis2.sampler``) with the parameters used.
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
               verbose: bool = True, tqdm_desc: str = "Sampling", **kwargs: Any) -> Any:
        t_seq = np.linspace(1, 0, steps + 1)
        t_seq = (rescale_t * t_seq / (1 + (rescale_t - 1) * t_seq)).tolist()
        sample = noise
        for t, t_prev in pairwise(t_seq):
            sample = self.sample_once(model, sample, t, t_prev, cond, **kwargs).pred_x_prev
        return SimpleNamespace(samples=sample, pred_x_t=[], pred_x_0=[])


class FlowEulerGuidanceIntervalSampler(FlowEulerSampler):
    def sample(self, model: Any, noise: Any, cond: Any = None, neg_cond: Any = None, steps: int = 50,
               rescale_t: float = 1.0, guidance_strength: float = 3.0, guidance_rescale: float = 0.0,
               guidance_interval: tuple = (0.0, 1.0), verbose: bool = True, tqdm_desc: str = "Sampling",
               **kwargs: Any) -> Any:
        record("trellis2.sampler", desc=tqdm_desc, steps=steps, guidance_strength=guidance_strength,
               guidance_rescale=guidance_rescale, rescale_t=rescale_t)
        return super().sample(model, noise, cond, steps, rescale_t, verbose, tqdm_desc, neg_cond=neg_cond,
                              guidance_strength=guidance_strength, guidance_rescale=guidance_rescale,
                              guidance_interval=guidance_interval, **kwargs)


FlowEulerCfgSampler = FlowEulerGuidanceIntervalSampler
