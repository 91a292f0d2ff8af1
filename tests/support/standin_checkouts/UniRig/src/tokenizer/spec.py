"""TEST STAND-IN for UniRig's tokenizer types (upstream src/tokenizer/spec.py ``TokenizerConfig`` and
``DetokenizeOutput``): computes nothing real.

``TokenizerConfig.parse(config)`` reads upstream's keys (``method``, ``num_discrete``, ``continuous_range``,
``cls_token_id``, ``parts_token_id``, ``order_config``) and opens the order config's skeleton files as upstream's
OrderConfig.parse does (relative paths against the working directory). ``DetokenizeOutput`` holds a generated
skeleton: ``bones`` (J, 6) as (parent position, position), so ``joints`` is ``bones[:, 3:]``; ``parents`` (None for
the root), ``tails``, ``names``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import yaml


@dataclass(frozen=True)
class TokenizerConfig:
    method: str
    num_discrete: int
    continuous_range: tuple[float, float]
    cls_token_id: dict
    parts_token_id: dict
    order_config: dict | None

    @staticmethod
    def parse(config) -> TokenizerConfig:
        order = config.get("order_config")
        skeletons = None
        if order is not None:
            skeletons = {}
            for name, path in order["skeleton_path"].items():
                with open(path) as f:
                    skeletons[name] = yaml.safe_load(f)
        return TokenizerConfig(method=config.method, num_discrete=config.num_discrete,
                               continuous_range=tuple(config.continuous_range), cls_token_id=dict(config.cls_token_id),
                               parts_token_id=dict(config.get("parts_token_id", {})), order_config=skeletons)


@dataclass(frozen=True)
class DetokenizeOutput:
    tokens: np.ndarray
    bones: np.ndarray
    parents: list
    tails: np.ndarray | None
    no_skin: np.ndarray | None
    cls: str | None
    parts: list
    names: list | None
    continuous_range: tuple[float, float]

    @property
    def joints(self) -> np.ndarray:
        return self.bones[:, 3:]

    @property
    def p_joints(self) -> np.ndarray:
        return self.bones[:, :3]

    @property
    def J(self) -> int:
        return self.bones.shape[0]
