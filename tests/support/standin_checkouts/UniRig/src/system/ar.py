"""TEST STAND-IN for UniRig's skeleton system (upstream src/system/ar.py ``ARSystem``, a LightningModule there, a
torch Module here): computes nothing real.

``ARSystem(steps_per_epoch, model, optimizer_config, loss_config, generate_kwargs={}, ...)`` keeps the model as
``self.model`` (so a checkpoint's keys start with ``model.``) and ``generate_kwargs``; ``predict_step(batch,
batch_idx, dataloader_idx=None)`` puts ``generate_kwargs`` into the batch and returns the model's predictions,
and, as upstream, prints any exception and returns an empty list instead.
"""

from __future__ import annotations

import torch


class ARSystem(torch.nn.Module):
    def __init__(self, steps_per_epoch: int, model, optimizer_config, loss_config, generate_kwargs: dict | None = None,
                 output_path=None, record_res=False, validate_cast: str = "bfloat16", val_interval=None,
                 val_start_from=None, scheduler_config=None):
        super().__init__()
        self.steps_per_epoch, self.model = steps_per_epoch, model
        self.optimizer_config, self.loss_config = optimizer_config, loss_config
        self.generate_kwargs = generate_kwargs or {}

    def _predict_step(self, batch, batch_idx, dataloader_idx=None):
        batch["generate_kwargs"] = self.generate_kwargs
        res = self.model.predict_step(batch)
        assert isinstance(res, list)
        return res

    def predict_step(self, batch, batch_idx, dataloader_idx=None):
        try:
            return self._predict_step(batch=batch, batch_idx=batch_idx, dataloader_idx=dataloader_idx)
        except Exception as e:  # noqa: BLE001 - upstream swallows every error here, the adapter must cope
            print(str(e))
            return []
