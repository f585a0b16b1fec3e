"""The main job's byte LM in a Lightning Fabric loop with reweighting (no ``Trainer``). The four
lines that differ from an unweighted loop are marked ``# reweight (n/4)``.

    python recipes/train_fabric.py --steps 200
    python recipes/train_fabric.py --devices 2 --steps 200 --checkpoint-dir ckpt  # DDP, 2 processes
    python recipes/train_fabric.py --devices 2 --steps 200 --resume ckpt/step-100.pt
    torchrun --nproc_per_node 2 recipes/train_fabric.py --steps 200  # devices: torchrun's

A resumed run continues the uninterrupted one bitwise (same items, loss weights and parameters)
with the same number of processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `recipes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.fabric import Fabric
from torch.utils.data import DataLoader

from recipes.loop import Trace, byte_lm, parser, report, training_set_and_sources
from recipes.model import make_optimizer, per_sample_loss, warmup_cosine
from reweight import Reweighter


def _launched_nodes() -> int:
    """The node count a launcher set: torchrun's world / local world, or SLURM's; else 1."""
    world, local = os.environ.get("WORLD_SIZE"), os.environ.get("LOCAL_WORLD_SIZE")
    if world and local:
        return max(1, int(world) // int(local))
    return int(os.environ.get("SLURM_NNODES", 1))


def main(argv: list[str] | None = None) -> None:
    cli = parser(__doc__ or "")
    cli.add_argument(
        "--devices",
        type=int,
        default=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),  # torchrun's --nproc_per_node
        help="processes (DDP when more than 1)",
    )
    cli.add_argument(
        "--num-nodes",
        type=int,
        default=_launched_nodes(),
        help="nodes (default: torchrun's WORLD_SIZE / LOCAL_WORLD_SIZE, or SLURM_NNODES)",
    )
    args = cli.parse_args(argv)
    distributed = args.devices * args.num_nodes > 1
    fabric = Fabric(
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy="ddp" if distributed else "auto",
    )
    fabric.launch()

    train_set, sources = training_set_and_sources(args)
    reweighter = Reweighter.from_dataset(  # reweight (1/4)
        train_set, sources=sources, total_steps=args.steps, seed=args.seed, infinite=True
    )
    loader = fabric.setup_dataloaders(  # our sampler stays: it shards one sequence itself
        DataLoader(train_set, args.batch_size, sampler=reweighter.sampler),  # reweight (2/4)
        use_distributed_sampler=False,
    )
    model = byte_lm(args)
    optimizer = make_optimizer(model, lr=args.lr)
    scheduler = warmup_cosine(optimizer, args.steps, args.warmup_steps)
    model, optimizer = fabric.setup(model, optimizer)
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": 0}
    state["reweighter"] = reweighter  # saved and restored with the rest
    if args.resume:
        fabric.load(args.resume, state, weights_only=False)
    batches: Iterator[Any] = iter(loader)  # after the restore: draws go on from the checkpoint
    trace = Trace(args.trace)

    for step in range(state["step"], args.steps):
        batch = next(batches)
        loss = reweighter.reduce(per_sample_loss(model, batch["tokens"]), batch)  # reweight (3/4)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()
        scheduler.step()
        reweighter.step()  # reweight (4/4)
        trace.record(step, batch, reweighter)
        state["step"] = done = step + 1
        if fabric.is_global_zero and done % args.log_every == 0:
            report(done, loss, reweighter)
        if args.checkpoint_dir and (done % args.checkpoint_every == 0 or done == args.steps):
            fabric.save(args.checkpoint_dir / f"step-{done}.pt", state)

    trace.save(fabric.global_rank, model, reweighter)


if __name__ == "__main__":
    main()
