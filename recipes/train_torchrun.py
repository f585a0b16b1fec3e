"""The main job's byte LM in a plain PyTorch loop with reweighting: DDP under torchrun, or one
process. The four lines that differ from an unweighted loop are marked ``# reweight (n/4)``.

    python recipes/train_torchrun.py --steps 200
    torchrun --nproc_per_node 2 recipes/train_torchrun.py --steps 200 --checkpoint-dir ckpt
    torchrun --nproc_per_node 2 recipes/train_torchrun.py --steps 200 --resume ckpt/step-100.pt

A resumed run continues the uninterrupted one bitwise (same items, loss weights and parameters)
with the same number of processes. Processes use gloo on CPU, nccl on GPUs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `recipes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from recipes.loop import Trace, byte_lm, parser, report, training_set_and_sources
from recipes.model import make_optimizer, per_sample_loss, warmup_cosine
from reweight import Reweighter


def save_checkpoint(path: Path, state: dict[str, Any], step: int) -> None:
    """Rank 0 writes every object's ``state_dict()`` and the step; every rank waits for it."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"step": step, **{k: v.state_dict() for k, v in state.items()}}, path)
    if dist.is_initialized():
        dist.barrier()


def load_checkpoint(path: Path, state: dict[str, Any]) -> int:
    """Restores every object of ``state`` from ``path``; returns the step to continue from."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    for key, obj in state.items():
        obj.load_state_dict(saved[key])
    return int(saved["step"])


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__ or "").parse_args(argv)
    distributed = "WORLD_SIZE" in os.environ  # set by torchrun
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)

    train_set, sources = training_set_and_sources(args)
    reweighter = Reweighter.from_dataset(  # reweight (1/4)
        train_set, sources=sources, total_steps=args.steps, seed=args.seed, infinite=True
    )
    loader = DataLoader(train_set, args.batch_size, sampler=reweighter.sampler)  # reweight (2/4)
    model = byte_lm(args).to(device)
    optimizer = make_optimizer(model, lr=args.lr)
    scheduler = warmup_cosine(optimizer, args.steps, args.warmup_steps)
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    state["reweighter"] = reweighter  # saved and restored with the rest
    start = load_checkpoint(args.resume, state) if args.resume else 0
    ddp_model = DistributedDataParallel(model) if distributed else model
    batches = iter(loader)  # after the restore: draws go on from the checkpoint
    trace = Trace(args.trace)

    for step in range(start, args.steps):
        batch = next(batches)
        tokens = batch["tokens"].to(device)
        loss = reweighter.reduce(per_sample_loss(ddp_model, tokens), batch)  # reweight (3/4)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        reweighter.step()  # reweight (4/4)
        trace.record(step, batch, reweighter)
        done = step + 1
        if rank == 0 and done % args.log_every == 0:
            report(done, loss, reweighter)
        if args.checkpoint_dir and (done % args.checkpoint_every == 0 or done == args.steps):
            save_checkpoint(args.checkpoint_dir / f"step-{done}.pt", state, done)

    trace.save(rank, model, reweighter)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
