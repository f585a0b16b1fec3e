"""ReweightCallback: the thin Lightning adapter around :class:`~reweight.Reweighter`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from reweight.engine import Reweighter

__all__ = ["ReweightCallback"]


def _find_sampler(loader: Any) -> Any:
    """The index sampler of a DataLoader (its sampler, or its batch sampler's sampler)."""
    if isinstance(loader, DataLoader):
        batch_sampler = getattr(loader, "batch_sampler", None)
        if batch_sampler is not None and hasattr(batch_sampler, "sampler"):
            return batch_sampler.sampler
        return loader.sampler
    return None


class ReweightCallback(Callback):
    """Steps the reweighter after every optimizer step, logs its metrics, checkpoints its state.

    * ``reweighter.step()`` runs once per optimizer step (so gradient accumulation counts one
      step per update, as Lightning's ``global_step`` does).
    * Every ``log_every_n_steps`` steps (default: the Trainer's), ``reweighter.metrics()`` goes
      to every logger in ``trainer.loggers`` under ``prefix``.
    * Its state (the sampler's stream position, its draws in flight and weights included) is
      saved in checkpoints and restored as soon as Lightning hands it over — before Lightning
      builds the train loader and its workers start drawing — so a resumed run continues the
      uninterrupted one, with ``num_workers > 0`` too.
    * The run's length (``total_steps``, for schedules) comes from the Reweighter when it was
      given one, else from the Trainer (``max_steps``, else Lightning's estimate from
      ``max_epochs``); a resume whose length differs from the checkpoint's warns with both.
    * Under DDP the sampler gets the trainer's rank and world size; it subclasses
      ``DistributedSampler``, so Lightning does not wrap it. A loader that does not use the
      reweighter's sampler is an error that says how to fix it.

    Example:
        >>> rw = Reweighter(8)
        >>> callback = ReweightCallback(rw, log_every_n_steps=10)
        >>> callback.prefix
        'reweight/'
    """

    def __init__(
        self,
        reweighter: Reweighter,
        log_every_n_steps: int | None = None,
        prefix: str = "reweight/",
    ) -> None:
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, got {log_every_n_steps}.")
        self.reweighter = reweighter
        self.log_every_n_steps = log_every_n_steps
        self.prefix = prefix
        self._last_step: int | None = None
        # A length given to the Reweighter by the user wins over the Trainer's.
        self._user_total_steps = reweighter.total_steps is not None

    # ------------------------------------------------------------------ setup

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.reweighter.sampler.set_distributed(trainer.global_rank, trainer.world_size)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_loader(trainer)
        if not self._user_total_steps:
            total = self._total_steps(trainer)
            if total is not None:
                self.reweighter.set_total_steps(total)  # warns if a checkpoint said otherwise
            elif self.reweighter.needs_total_steps and self.reweighter.total_steps is None:
                raise ValueError(
                    "ReweightCallback cannot tell the run's length (max_steps is unset and "
                    "Lightning's estimate is infinite); set Trainer(max_steps=...) or "
                    "Reweighter(total_steps=...) — the reweighter's schedules need it."
                )
        self._last_step = trainer.global_step
        if self.reweighter.global_step != trainer.global_step:
            warnings.warn(
                f"the Reweighter is at step {self.reweighter.global_step} but the Trainer at "
                f"{trainer.global_step}: its state was not restored with the model (resume with "
                "ckpt_path= and this callback in the Trainer) or it was stepped elsewhere.",
                RuntimeWarning,
                stacklevel=2,
            )

    @staticmethod
    def _total_steps(trainer: pl.Trainer) -> int | None:
        """The run's optimizer steps: ``max_steps`` when set, else Lightning's estimate.

        Read here, once the loaders exist and any checkpoint is restored: asking for
        ``estimated_stepping_batches`` earlier (e.g. in ``configure_optimizers``) makes Lightning
        build the loaders before the restore and drop their saved state (Lightning issue 20550).
        """
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return int(trainer.max_steps)
        estimate = trainer.estimated_stepping_batches
        return int(estimate) if math.isfinite(estimate) and estimate >= 1 else None

    def _check_loader(self, trainer: pl.Trainer) -> None:
        loaders = trainer.train_dataloader
        candidates = (
            loaders.values()
            if isinstance(loaders, Mapping)
            else (loaders if isinstance(loaders, (list, tuple)) else [loaders])
        )
        samplers = [_find_sampler(loader) for loader in candidates]
        if not any(s is self.reweighter.sampler for s in samplers):
            found = ", ".join(type(s).__name__ for s in samplers) or "none"
            raise RuntimeError(
                "ReweightCallback: the train DataLoader does not draw from reweighter.sampler "
                f"(found: {found}). Build it as DataLoader(dataset, batch_size=..., "
                "sampler=reweighter.sampler) and do not shuffle; under DDP do not wrap the "
                "sampler yourself — ReweightSampler already shards by rank."
            )

    # ------------------------------------------------------------------ steps

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if self._last_step is not None and step == self._last_step:
            return  # still accumulating gradients: no optimizer step yet
        self._last_step = step
        self.reweighter.step()
        every = self.log_every_n_steps or int(getattr(trainer, "log_every_n_steps", 50))
        if trainer.is_global_zero and step % every == 0 and trainer.loggers:
            metrics = {self.prefix + k: v for k, v in self.reweighter.metrics().items()}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return self.reweighter.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks after ``setup`` (rank and world size are known) and
        # before ``FitLoop.setup_data`` creates the train loader's iterator, whose workers
        # start drawing at once: applying the state now is what makes them draw from it.
        self.reweighter.load_state_dict(state_dict)
