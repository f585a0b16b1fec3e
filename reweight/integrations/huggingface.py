"""Reweighting with the Hugging Face ``transformers.Trainer``: :class:`ReweightTrainer`.

``ReweightTrainer`` is a ``Trainer`` that takes ``reweighter=``; nothing else in a Trainer script
changes (``pip install 'reweight[hf]'``). For a Trainer subclass (TRL's ``SFTTrainer``, say),
put :class:`ReweightTrainerMixin` first among its bases. What it does:

* **Sampler.** The train loader draws from ``reweighter.sampler``, which already yields only
  this rank's slice of one global draw sequence: the shard ``accelerate`` puts around a batch
  sampler under multi-process training is made a pass-through, as ``transformers`` does for its
  own rank-aware ``BatchRebalanceSampler``. Anything that replaces the sampler
  (``train_sampling_strategy="group_by_length"``, an override of ``get_train_dataloader``) is an
  error that says so.
* **Loss.** Per-sample losses from the logits (:func:`per_sample_loss`: each sample's mean over
  its own target tokens, ``-100`` ignored; causal LMs shift the labels once, as their own loss
  does), through ``reweighter.reduce``. The Trainer divides by the gradient accumulation steps.
* **Steps.** ``reweighter.step()`` once per optimizer step (not per micro-batch).
* **Metrics.** ``reweighter.metrics()`` join the Trainer's training logs (every
  ``logging_steps``) under ``reweight/``, so every ``report_to`` integration shows them.
* **Checkpoints.** Every checkpoint gets ``reweighter.pt``; ``train(resume_from_checkpoint=...)``
  restores it before the loader draws, and the resumed run continues the uninterrupted one
  bitwise. The Trainer's skip of the batches already trained in the epoch costs nothing: it
  drops placeholder indices, never reads data.

Example:
    >>> import tempfile, torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments
    >>> from reweight import IndexedDataset, Reweighter
    >>> from reweight.integrations.huggingface import ReweightTrainer
    >>> ids = torch.randint(0, 128, (16, 8), generator=torch.Generator().manual_seed(0))
    >>> rows = [{"input_ids": r, "labels": r} for r in ids]
    >>> train = IndexedDataset(rows, domains=[0] * 8 + [1] * 8, domain_names=["web", "code"])
    >>> rw = Reweighter.from_dataset(train, sources=[{"kind": "mixing", "rule": 3.0}])
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=128))
    >>> args = TrainingArguments(tempfile.mkdtemp(), max_steps=2, per_device_train_batch_size=4,
    ...                          report_to="none", use_cpu=True, save_strategy="no",
    ...                          disable_tqdm=True)
    >>> trainer = ReweightTrainer(model=model, args=args, train_dataset=train, reweighter=rw)
    >>> trainer.train().global_step, rw.global_step  # doctest: +ELLIPSIS
    {'train_runtime': ...}
    (2, 2)
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from accelerate.data_loader import BatchSamplerShard, DataLoaderDispatcher
from torch.utils.data import Sampler
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from reweight.engine import Reweighter
from reweight.sampler import ReweightSampler

__all__ = [
    "REWEIGHTER_STATE_NAME",
    "ReweightTrainer",
    "ReweightTrainerMixin",
    "per_sample_loss",
]

REWEIGHTER_STATE_NAME = "reweighter.pt"
"""The reweighter's state in each checkpoint directory (``torch.save`` of its state dict)."""

_TRAINER_STATE_NAME = "trainer_state.json"
_PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

if TYPE_CHECKING:  # pragma: no cover
    _TrainerBase = Trainer
else:
    _TrainerBase = object


# ---------------------------------------------------------------------- per-sample losses


def _problem_type(logits: torch.Tensor, labels: torch.Tensor) -> str:
    """The problem type Hugging Face's sequence-classification loss infers."""
    if logits.shape[-1] == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


def per_sample_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    shift: bool = False,
    ignore_index: int = -100,
    problem_type: str | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """One loss per sample from a model's logits and labels: a float32 tensor of shape (batch,).

    * Token logits ``(batch, length, vocab)`` with labels ``(batch, length)``: cross-entropy per
      token, then each sample's mean over its own target tokens (labels equal to
      ``ignore_index`` — padding, prompts — are left out). ``shift=True`` is the causal-LM
      rule of Hugging Face models: the logits at position t predict ``labels[:, t + 1]``, so
      labels are given aligned with ``input_ids``. A sample with no target token gets NaN,
      which :meth:`~reweight.Reweighter.reduce` masks out (and counts).
    * Sequence logits ``(batch, num_labels)``: as Hugging Face's sequence classification,
      ``problem_type`` "regression" (MSE), "single_label_classification" (integer labels,
      cross-entropy) or "multi_label_classification" (float labels, BCE), each averaged over
      the sample's labels; None infers it the same way (1 label: regression; integer labels:
      single-label).

    ``label_smoothing`` is the Trainer's ``label_smoothing_factor`` (classification losses).

    Example:
        >>> logits = torch.zeros(2, 4, 3)  # uniform predictions: each token costs log 3
        >>> labels = torch.tensor([[1, 2, 0, -100], [2, -100, -100, -100]])
        >>> [round(x, 4) for x in per_sample_loss(logits, labels, shift=True).tolist()]
        [1.0986, nan]
        >>> per_sample_loss(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])).shape
        torch.Size([2])
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"per_sample_loss needs tensors, got logits {type(logits).__name__} and labels "
            f"{type(labels).__name__}."
        )
    labels = labels.to(logits.device)
    if logits.dim() == 3 and labels.dim() == 2:
        return _token_losses(logits, labels, shift, ignore_index, label_smoothing)
    if logits.dim() == 2 and labels.shape[0] == logits.shape[0] and labels.dim() in (1, 2):
        return _sequence_losses(logits, labels, problem_type, label_smoothing)
    raise ValueError(
        f"per_sample_loss got logits of shape {tuple(logits.shape)} and labels of shape "
        f"{tuple(labels.shape)}; it reads token logits (batch, length, vocab) with labels "
        "(batch, length), or sequence logits (batch, num_labels) with one label (or one row "
        "of labels) per sample. For another output, pass ReweightTrainer(per_sample_loss_func="
        "...) returning one loss per sample."
    )


def _token_losses(
    logits: torch.Tensor, labels: torch.Tensor, shift: bool, ignore_index: int, smoothing: float
) -> torch.Tensor:
    if shift:
        logits, labels = logits[:, :-1, :], labels[:, 1:]
    if logits.shape[:2] != labels.shape:
        raise ValueError(
            f"token logits of shape {tuple(logits.shape)} do not match labels of shape "
            f"{tuple(labels.shape)}{' after the causal shift' if shift else ''}; give one label "
            "per input position (labels aligned with input_ids)."
        )
    batch, length, vocab = logits.shape
    token = F.cross_entropy(
        logits.float().reshape(-1, vocab),
        labels.reshape(-1).long(),
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=smoothing,
    ).view(batch, length)
    mask = labels != ignore_index
    count = mask.sum(dim=1)
    mean = (token * mask).sum(dim=1) / count.clamp(min=1)
    # NaN marks "no target": a constant, so no NaN reaches the gradient of the other samples.
    return torch.where(count > 0, mean, torch.full_like(mean, math.nan))


def _sequence_losses(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None, smoothing: float
) -> torch.Tensor:
    kind = problem_type or _problem_type(logits, labels)
    if kind not in _PROBLEM_TYPES:
        raise ValueError(
            f"problem_type must be one of {list(_PROBLEM_TYPES)} or None, got {kind!r}."
        )
    logits = logits.float()
    if kind == "single_label_classification":
        return F.cross_entropy(
            logits, labels.reshape(-1).long(), reduction="none", label_smoothing=smoothing
        )
    target = labels.float().reshape(logits.shape)
    if kind == "regression":
        return F.mse_loss(logits, target, reduction="none").mean(dim=1)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=1)


def _check_label_shift(input_ids: Any, labels: torch.Tensor, ignore_index: int) -> None:
    """Raises when causal-LM labels look shifted already (they would be shifted twice)."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.shape != labels.shape:
        return
    if labels.dim() != 2 or labels.shape[1] < 2:
        return
    head, ids = labels[:, :-1], input_ids.to(labels.device)
    valid = head != ignore_index
    n = int(valid.sum())
    if n < 8:
        return  # too few label tokens to tell
    same = float(((head == ids[:, :-1]) & valid).sum()) / n
    ahead = float(((head == ids[:, 1:]) & valid).sum()) / n
    if ahead >= 0.9 and same < 0.5:
        raise ValueError(
            f"the labels look shifted already: labels[:, t] == input_ids[:, t + 1] for "
            f"{ahead:.0%} of the label tokens (labels[:, t] == input_ids[:, t] for {same:.0%}). "
            "Causal LMs shift labels inside their loss, and so does ReweightTrainer, so these "
            "would be shifted twice (every position trained to predict the token two ahead). "
            "Give labels aligned with input_ids (labels = input_ids with padding set to -100, "
            "as DataCollatorForLanguageModeling(mlm=False) does), or put labels you shifted "
            "yourself under 'shift_labels' instead of 'labels'."
        )


# ---------------------------------------------------------------------- sampler plumbing


class _TrainSampler(Sampler[int]):
    """``reweighter.sampler`` as the Trainer's train sampler.

    After a resume in the middle of an epoch the Trainer skips the batches of the epoch it
    already trained on; the ReweightSampler instead starts at the first draw not trained on. So
    the first iteration after a resume yields ``skip`` placeholder indices first: the Trainer's
    skip (accelerate's ``SkipBatchSampler``) drops them as index lists, without reading the data
    set. The placeholder is ``num_items``, outside the data set, so one can never train by
    mistake.
    """

    def __init__(self, sampler: ReweightSampler) -> None:
        self.sampler = sampler
        self.skip = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        placeholders = itertools.repeat(self.sampler.num_items, skip)
        return itertools.chain(placeholders, iter(self.sampler))


def _unwrap_loader(loader: Any) -> tuple[Any, list[Any]]:
    """The index sampler under a (prepared) DataLoader, and the accelerate shards on the way."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    shards = []
    while batch_sampler is not None and hasattr(batch_sampler, "batch_sampler"):
        if isinstance(batch_sampler, BatchSamplerShard):
            shards.append(batch_sampler)
        batch_sampler = batch_sampler.batch_sampler  # SkipBatchSampler, BatchSamplerShard
    if batch_sampler is not None and hasattr(batch_sampler, "sampler"):
        return batch_sampler.sampler, shards
    return getattr(loader, "sampler", None), shards


# ---------------------------------------------------------------------- the Trainer


class _ReweightHooks(TrainerCallback):
    """Steps the reweighter once per optimizer step and checks the run at its start."""

    def __init__(self, trainer: ReweightTrainerMixin) -> None:
        self.trainer = trainer

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self.trainer._reweight_train_begin(state, kwargs.get("train_dataloader"))

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        # After the optimizer step and global_step += 1, before logging and checkpointing.
        self.trainer.reweighter.step()


class ReweightTrainerMixin(_TrainerBase):
    """Makes a ``transformers.Trainer`` (sub)class reweight; put it first among the bases.

    Args:
        reweighter: the :class:`~reweight.Reweighter`, built for ``train_dataset`` (an
            :class:`~reweight.IndexedDataset`, e.g. ``IndexedDataset.from_hf``), e.g. with
            ``Reweighter.from_dataset(train_dataset, ...)``.
        per_sample_loss_func: ``f(outputs, labels) -> Tensor (batch,)``, one loss per sample
            (default: :func:`per_sample_loss` of ``outputs.logits``). The Trainer's
            ``compute_loss_func`` returns one loss per batch, so it is refused.
        causal: whether token losses predict the next label (shift once); None: as the model's
            own loss does (causal LMs shift, encoder-decoders and token classifiers do not).
        log_prefix: prefix of the reweighter's metrics in the Trainer's logs.
        *args, **kwargs: the Trainer's arguments.

    The run's length for schedules (``total_steps``) comes from the Reweighter when given, else
    from the Trainer's ``max_steps`` (or its estimate from ``num_train_epochs``).

    Raises:
        ValueError: at construction, for Trainer settings that would replace or re-shard the
            sampler, skip data on resume in a way that loses draws, or reduce the loss per batch.

    Example:
        >>> from transformers import Trainer
        >>> class MyTrainer(ReweightTrainerMixin, Trainer):  # or TRL's SFTTrainer, ...
        ...     pass
    """

    def __init__(
        self,
        *args: Any,
        reweighter: Reweighter,
        per_sample_loss_func: Callable[[Any, Any], torch.Tensor] | None = None,
        causal: bool | None = None,
        log_prefix: str = "reweight/",
        **kwargs: Any,
    ) -> None:
        if not isinstance(reweighter, Reweighter):
            raise TypeError(
                f"reweighter must be a reweight.Reweighter, got {type(reweighter).__name__}; "
                "build one with Reweighter.from_dataset(train_dataset, ...)."
            )
        if per_sample_loss_func is not None and not callable(per_sample_loss_func):
            raise TypeError(f"per_sample_loss_func must be callable, got {per_sample_loss_func!r}.")
        super().__init__(*args, **kwargs)
        self.reweighter = reweighter
        self.per_sample_loss_func = per_sample_loss_func
        self.log_prefix = log_prefix
        self._causal = causal
        self._user_total_steps = reweighter.total_steps is not None
        self._label_check_pending = True
        self._check_arguments()
        reweighter.sampler.set_distributed(self.args.process_index, self.args.world_size)
        self._reweight_sampler = _TrainSampler(reweighter.sampler)
        # reduce() returns a mean over the micro-batch: the Trainer divides it by the gradient
        # accumulation steps (and counts no tokens for the model's own loss).
        self.loss_is_scaled_for_ga = False
        self.model_accepts_loss_kwargs = False
        self.add_callback(_ReweightHooks(self))

    # ------------------------------------------------------------------ checks

    def _check_arguments(self) -> None:
        args = self.args
        strategy = getattr(args, "train_sampling_strategy", None)
        if getattr(args, "group_by_length", False) or strategy in (
            "group_by_length",
            "batch_rebalance",
        ):
            name = strategy if strategy in ("group_by_length", "batch_rebalance") else "length"
            raise ValueError(
                f"ReweightTrainer draws training batches from reweighter.sampler, and "
                f"train_sampling_strategy={name!r} (group_by_length) would replace it. Leave "
                "it at its default ('random'): the reweighter decides what is drawn."
            )
        if args.ignore_data_skip:
            raise ValueError(
                "ignore_data_skip=True: ReweightTrainer resumes the draw stream exactly, and the "
                "Trainer's skip of the batches already trained costs nothing (it reads no data); "
                "without it a resumed epoch would misalign gradient accumulation. Leave "
                "ignore_data_skip=False."
            )
        config = args.accelerator_config
        for key in ("split_batches", "dispatch_batches"):
            if getattr(config, key, None):
                raise ValueError(
                    f"accelerator_config {key}=True: each rank draws its own batches from "
                    "reweighter.sampler (already sharded by rank), so accelerate must not split "
                    f"or dispatch them; set accelerator_config={{'{key}': False}}."
                )
        if self.compute_loss_func is not None:
            raise ValueError(
                "compute_loss_func returns one loss per batch, and the reweighter needs one per "
                "sample; pass ReweightTrainer(per_sample_loss_func=...) returning a tensor of "
                "shape (batch,) instead (see reweight.integrations.huggingface.per_sample_loss)."
            )
        sampler = self.reweighter.sampler
        data: Any = self.train_dataset
        size = len(data) if hasattr(data, "__len__") else None
        if size is not None and size != sampler.num_items:
            raise ValueError(
                f"the Reweighter is built for {sampler.num_items} items but train_dataset has "
                f"{size}; build it for this data set: Reweighter.from_dataset(train_dataset, ...)."
            )
        batch = args.per_device_train_batch_size
        left = 0 if sampler.infinite else sampler.samples_per_rank % batch
        if args.dataloader_drop_last and left:
            raise ValueError(
                f"dataloader_drop_last=True drops the last {left} draws of each rank's epoch "
                f"({sampler.samples_per_rank} draws, batches of {batch}), which the sampler "
                "would hand out again; leave it False, or make Reweighter(num_samples=...) a "
                "multiple of the global batch size."
            )

    def _reweight_train_begin(self, state: TrainerState, loader: Any) -> None:
        if isinstance(loader, DataLoaderDispatcher):
            raise RuntimeError(
                "the train DataLoader dispatches batches from the main process; each rank must "
                "draw its own from reweighter.sampler: set accelerator_config={'dispatch_batches': "
                "False}."
            )
        found, shards = _unwrap_loader(loader)
        if found is not self._reweight_sampler:
            raise RuntimeError(
                "ReweightTrainer: the train DataLoader does not draw from reweighter.sampler "
                f"(found: {type(found).__name__}). Something replaced it — an override of "
                "get_train_dataloader or _get_train_sampler, or a train_sampling_strategy: "
                "remove the override (or build on super().get_train_dataloader())."
            )
        if any(shard.num_processes > 1 for shard in shards):
            raise RuntimeError(
                "accelerate shards the train batches again over processes, but "
                "reweighter.sampler yields this rank's slice already (each rank would train on "
                "half its draws); build the loader with super().get_train_dataloader()."
            )
        if not self._user_total_steps and state.max_steps > 0:
            self.reweighter.set_total_steps(int(state.max_steps))
        self._label_check_pending = True
        if self.reweighter.global_step != state.global_step:
            warnings.warn(
                f"the Reweighter is at step {self.reweighter.global_step} but the Trainer at "
                f"{state.global_step}: resume with trainer.train(resume_from_checkpoint=...) so "
                "both restore together, and use a fresh Reweighter for a new run.",
                RuntimeWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ data

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        return self._reweight_sampler

    def get_train_dataloader(self) -> Any:
        loader = super().get_train_dataloader()
        # accelerate wraps the batch sampler in a BatchSamplerShard under multi-process
        # training, which would keep every world_size-th batch of this rank's draws: make it a
        # pass-through (transformers does the same for its rank-aware BatchRebalanceSampler).
        for shard in _unwrap_loader(loader)[1]:
            shard.num_processes, shard.process_index, shard.even_batches = 1, 0, False
        return loader

    @property
    def _reweight_keys(self) -> list[str]:
        keys = ["index", "domain", "shift_labels", *getattr(self.reweighter, "_batch_keys", ())]
        return list(dict.fromkeys(keys))

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        # Keep the columns the reweighter reads (the Trainer drops what forward() does not take).
        columns: list[str] = list(self._signature_columns or [])
        keep = columns + [k for k in self._reweight_keys if k not in columns]
        self._signature_columns = keep  # type: ignore[assignment]

    # ------------------------------------------------------------------ loss

    def _shifts_labels(self, model: Any) -> bool:
        """Whether token losses predict the next label: the Trainer's own rule (a causal-LM
        class, or a loss that shifts), never for encoder-decoders."""
        if self._causal is not None:
            return self._causal
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        unwrapped = self.accelerator.unwrap_model(model)
        if hasattr(unwrapped, "get_base_model"):  # a PEFT model
            unwrapped = unwrapped.get_base_model()
        if getattr(getattr(unwrapped, "config", None), "is_encoder_decoder", False):
            return False
        causal_names = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
        return type(unwrapped).__name__ in causal_names or bool(
            getattr(self, "_loss_shifts_labels", False)
        )

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """In training, the reweighted loss: per-sample losses through ``reweighter.reduce``.
        In evaluation, the Trainer's own loss (the reweighter is not touched)."""
        inputs = dict(inputs)
        batch = {key: inputs.pop(key) for key in self._reweight_keys if key in inputs}
        if not model.training:
            if "shift_labels" in batch:
                inputs["shift_labels"] = batch["shift_labels"]
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels", None)
        shifted = batch.pop("shift_labels", None)
        target = shifted if shifted is not None else labels
        if target is None:
            raise ValueError(
                f"the training batch has no 'labels' (keys: {sorted(inputs)}); ReweightTrainer "
                "computes each sample's loss from the model's logits and the labels: give the "
                "batch labels (or pass per_sample_loss_func=...)."
            )
        unwrapped = self.accelerator.unwrap_model(model)
        if getattr(getattr(unwrapped, "config", None), "is_encoder_decoder", False):
            inputs["labels"] = labels  # the decoder's inputs are made from them
        outputs = model(**inputs)
        if self.per_sample_loss_func is not None:
            losses = self.per_sample_loss_func(outputs, target)
        else:
            shift = shifted is None and self._shifts_labels(model)
            if shift and self._label_check_pending:
                _check_label_shift(inputs.get("input_ids"), target, -100)
            self._label_check_pending = False
            logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
            losses = per_sample_loss(
                logits,
                target,
                shift=shift,
                problem_type=getattr(getattr(unwrapped, "config", None), "problem_type", None),
                label_smoothing=float(self.args.label_smoothing_factor),
            )
        self._check_losses(losses, batch)
        loss = self.reweighter.reduce(losses, batch)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """``Trainer.prediction_step`` without the reweighter's batch keys (``index``, ...)."""
        drop = set(self._reweight_keys) - {"shift_labels"}
        inputs = {key: value for key, value in inputs.items() if key not in drop}
        return super().prediction_step(model, inputs, *args, **kwargs)

    @staticmethod
    def _check_losses(losses: Any, batch: Mapping[str, Any]) -> None:
        index = batch.get("index")
        size = len(index) if index is not None and hasattr(index, "__len__") else None
        if isinstance(losses, torch.Tensor) and losses.dim() == 0:
            raise ValueError(
                f"the per-sample loss is a scalar ({float(losses.detach()):.4g}) for a batch of "
                f"{size if size is not None else 'several'} samples: it was reduced over the "
                "batch already. The reweighter needs one loss per sample: compute it with "
                "reduction='none' and average each sample's tokens "
                "(reweight.integrations.huggingface.per_sample_loss does this)."
            )

    # ------------------------------------------------------------------ logging

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # the training logs, every logging_steps
            prefix = self.log_prefix
            logs.update({prefix + k: v for k, v in self.reweighter.metrics().items()})
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        output_dir = os.path.join(self._get_output_dir(trial=trial), folder)
        os.makedirs(output_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=output_dir, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(self.reweighter.state_dict(), tmp)
            os.replace(tmp, os.path.join(output_dir, REWEIGHTER_STATE_NAME))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def train(
        self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        """``Trainer.train``; a resume restores the reweighter from the checkpoint first."""
        self._reweight_sampler.skip = 0
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir) or True
        if isinstance(resume_from_checkpoint, str):
            self._check_arguments()
            self._load_reweighter(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_reweighter(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, REWEIGHTER_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"the checkpoint {checkpoint} has no {REWEIGHTER_STATE_NAME}: it was not written "
                "by ReweightTrainer, so the reweighter cannot continue where it stopped. Resume "
                "from a checkpoint ReweightTrainer wrote; or, to start the reweighter afresh, "
                "load the model from it (from_pretrained) and train without "
                "resume_from_checkpoint."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        trainer_state = os.path.join(checkpoint, _TRAINER_STATE_NAME)
        step = TrainerState.load_from_json(trainer_state).global_step
        saved = state.get("global_step") if isinstance(state, Mapping) else None
        if saved != step:
            raise ValueError(
                f"{path} holds the reweighter at step {saved!r} but the checkpoint is at step "
                f"{step}; the file comes from another checkpoint — resume from an unmodified "
                "checkpoint directory."
            )
        skip = self._resume_skip(state, step)
        self.reweighter.load_state_dict(state)
        self._reweight_sampler.skip = skip

    def _resume_skip(self, state: Mapping[str, Any], step: int) -> int:
        """Draws of the resumed epoch already trained on: what the Trainer skips, checked."""
        stream = state["sampler"]["stream"]
        world = int(stream["world_size"])
        if world != self.args.world_size:
            raise ValueError(
                f"the checkpoint was written by {world} processes and this run has "
                f"{self.args.world_size}; resume with the same number of processes."
            )
        consumed = stream["consumed"]
        if isinstance(consumed, torch.Tensor):
            consumed = consumed.tolist()
        consumed = int(consumed[self.args.process_index])
        sampler, batch = self.reweighter.sampler, self._train_batch_size
        accumulation = self.args.gradient_accumulation_steps
        if sampler.infinite:
            offset, per_epoch = consumed, max(int(self.args.max_steps), 1)
        else:
            offset = consumed % sampler.samples_per_rank
            batches = sampler.samples_per_rank // batch
            if not self.args.dataloader_drop_last:
                batches = -(-sampler.samples_per_rank // batch)
            per_epoch = max(-(-batches // accumulation), 1)
        expected = (step % per_epoch) * accumulation * batch
        if offset != expected:
            raise ValueError(
                f"the checkpoint's draw stream is {offset} draws into its epoch, but the Trainer "
                f"will skip {expected} (step {step}, batches of {batch}, {accumulation} "
                "accumulation steps): resume with the per_device_train_batch_size, "
                "gradient_accumulation_steps and data of the run that wrote the checkpoint."
            )
        return offset


class ReweightTrainer(ReweightTrainerMixin, Trainer):
    """A ``transformers.Trainer`` that reweights its training data with a
    :class:`~reweight.Reweighter` (see :class:`ReweightTrainerMixin` for the arguments and the
    module docstring for what changes).

    Example:
        >>> import inspect
        >>> "reweighter" in inspect.signature(ReweightTrainerMixin.__init__).parameters
        True
    """
