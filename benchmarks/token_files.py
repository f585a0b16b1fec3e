"""Memory of packed token files: ``IndexedDataset.from_token_files`` over 10^8 tokens.

Writes ``--tokens`` (10^8) ``uint16`` tokens over ``--domains`` (3) raw ``.bin`` files (shares
50/30/20 %) into a temporary directory, builds the dataset (block size ``--block-size``, 1024,
shifted blocks of 1025 tokens), draws ``--draws`` (2,000) blocks with a ``Reweighter``'s
sampler (domain mixing 1/3 each, so the small domains are upsampled) through a ``DataLoader``
(``--workers``, 0 = in this process, so its memory is the one measured), and reports the
process's resident memory after each stage (``warmed``: after the first batch, once the
allocator, the collate function and the sampler's kernels have warmed up), from
``/proc/self/status`` (or psutil where /proc is missing):

- ``rss``: all resident memory (``VmRSS``);
- ``anon``: memory the process owns (``RssAnon``): heap, tensors, numpy arrays;
- ``file``: file pages mapped into the process (``RssFile``): the token pages read through the
  memory maps (plus the shared libraries), which the kernel can drop at any time.

"Flat memory" means ``anon`` grows by far less than the token data from the first batch to the
last: the target is under 5 % of it (10 MB for 200 MB), for ``anon`` and for ``rss``. Every
drawn block is checked against the token formula the files were written with
(``token[p] = (31·p + 1000·d) mod 50257`` at position ``p`` of domain ``d``).

The baseline ``memmap`` then reads the same blocks by slicing ``np.memmap`` maps of the files,
as nanoGPT's ``get_batch`` does, and reports its memory growth: its ``anon`` stays flat too, but
every touched page (and the pages the kernel maps around it) stays in ``file`` and so in RSS
until the map is dropped. This is why ``TokenBlocks`` reads each block with ``os.pread``.

    PYTHONPATH=. python benchmarks/token_files.py           # 10^8 tokens, table
    PYTHONPATH=. python benchmarks/token_files.py --json    # one JSON object on stdout
    PYTHONPATH=. python benchmarks/token_files.py --quick   # 10^6 tokens, 200 draws
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.utils.data import DataLoader

from reweight import DomainMixing, IndexedDataset, Reweighter

VOCAB = 50257  # GPT-2's vocabulary: uint16 tokens
SHARES = (0.5, 0.3, 0.2)
WRITE_CHUNK = 1 << 22  # tokens generated and written at a time


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def memory() -> dict[str, float]:
    """Resident memory of this process in MB: rss, anon, file (see the module docstring)."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in fields:
                    out[fields[key]] = int(value.split()[0]) / 1024  # kB -> MB
    except OSError:
        pass
    if "rss" not in out:
        try:
            import psutil

            out["rss"] = psutil.Process().memory_info().rss / 2**20
        except ImportError:
            out["rss"] = float("nan")
    return out


def tokens_at(positions: np.ndarray, domain: int) -> np.ndarray:
    """The token written at ``positions`` of domain ``domain``."""
    return ((positions.astype(np.int64) * 31 + 1000 * domain) % VOCAB).astype(np.uint16)


def write_corpus(root: Path, total: int, domains: int) -> dict[str, Path]:
    shares = np.asarray(SHARES[:domains] if domains <= len(SHARES) else [1.0] * domains)
    sizes = np.floor(shares / shares.sum() * total).astype(np.int64)
    sizes[0] += total - int(sizes.sum())
    files = {}
    for d, size in enumerate(sizes.tolist()):
        path = root / f"domain{d}.bin"
        with open(path, "wb") as handle:
            for start in range(0, size, WRITE_CHUNK):
                stop = min(start + WRITE_CHUNK, size)
                tokens_at(np.arange(start, stop), d).tofile(handle)
        files[f"domain{d}"] = path
    return files


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    total = int(float(args.tokens))
    stages: dict[str, dict[str, float]] = {"start": memory()}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        files = write_corpus(Path(tmp), total, args.domains)
        write_s = time.perf_counter() - t0
        data_mb = sum(p.stat().st_size for p in files.values()) / 2**20
        log(f"wrote {total:.3g} tokens ({data_mb:.0f} MB) in {write_s:.1f} s")
        stages["written"] = memory()

        t0 = time.perf_counter()
        ds = IndexedDataset.from_token_files(files, block_size=args.block_size, dtype="uint16")
        build_s = time.perf_counter() - t0
        stages["built"] = memory()
        reweighter = Reweighter.from_dataset(
            ds,
            sources=[DomainMixing([1 / args.domains] * args.domains)],
            num_samples=args.draws,
            seed=0,
        )
        loader = DataLoader(
            ds, batch_size=args.batch_size, sampler=reweighter.sampler, num_workers=args.workers
        )
        stages["loader"] = memory()
        log(f"built {len(ds)} blocks over {ds.domain_names} in {build_s * 1e3:.1f} ms")

        span = args.block_size + 1
        first = np.concatenate([[0], np.cumsum(ds.domain_sizes)])
        drawn = 0
        seen: list[int] = []
        ok = True
        counts = np.zeros(args.domains, dtype=np.int64)
        t0 = time.perf_counter()
        for step, batch in enumerate(loader):
            if step == 1:  # after the first batch: allocator, collate and kernels warmed up
                stages["warmed"] = memory()
            for row, index, domain in zip(
                batch["input_ids"].numpy(),
                batch["index"].tolist(),
                batch["domain"].tolist(),
                strict=True,
            ):
                start = (index - int(first[domain])) * args.block_size
                expected = tokens_at(np.arange(start, start + span), domain)
                ok = ok and bool(np.array_equal(row, expected))
                counts[domain] += 1
            drawn += len(batch["index"])
            seen.extend(batch["index"].tolist())
        iterate_s = time.perf_counter() - t0
        stages["iterated"] = memory()
        indices = np.asarray(seen, dtype=np.int64)
        del loader, reweighter

        # The same blocks read straight from TokenBlocks (no DataLoader, no check): the read cost.
        blocks = ds.dataset
        t0 = time.perf_counter()
        for index in indices.tolist():
            blocks[index]
        direct_s = time.perf_counter() - t0

        # Baseline: the same blocks sliced out of np.memmap maps (nanoGPT's get_batch).
        maps = [np.memmap(path, dtype=np.uint16, mode="r") for path in files.values()]
        domains = ds.domains
        assert domains is not None
        before = memory()
        t0 = time.perf_counter()
        for index in indices.tolist():
            d = int(domains[index])
            start = (index - int(first[d])) * args.block_size
            torch.from_numpy(maps[d][start : start + span].astype(np.int64))
        memmap_s = time.perf_counter() - t0
        after = memory()
        memmap_growth = {k: after[k] - before[k] for k in after if k in before}
        del maps, ds, blocks

    end = stages["iterated"]
    base = stages.get("warmed", stages["loader"])
    growth = {k: end[k] - base[k] for k in end if k in base}
    total_growth = {k: end[k] - stages["loader"][k] for k in end if k in stages["loader"]}
    built_growth = {k: stages["built"][k] - stages["written"][k] for k in stages["built"]}
    anon_growth = growth.get("anon", growth["rss"])
    return {
        "benchmark": "token_files",
        "config": {
            "tokens": total,
            "domains": args.domains,
            "block_size": args.block_size,
            "draws": args.draws,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "dtype": "uint16",
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
        },
        "results": {
            "data_mb": data_mb,
            "blocks": int(first[-1]),
            "drawn": drawn,
            "drawn_per_domain": counts.tolist(),
            "write_s": write_s,
            "build_ms": build_s * 1e3,
            "iterate_s": iterate_s,
            "blocks_per_s": drawn / iterate_s,
            "tokens_per_s": drawn * span / iterate_s,
            "memory_mb": stages,
            "growth_build_mb": built_growth,
            "growth_iterate_mb": total_growth,
            "growth_after_first_batch_mb": growth,
            "anon_growth_share_of_data": anon_growth / data_mb,
            "rss_growth_share_of_data": growth["rss"] / data_mb,
            "direct_read_s": direct_s,
            "direct_blocks_per_s": len(indices) / direct_s,
            "memmap_baseline": {
                "read_s": memmap_s,
                "blocks_per_s": len(indices) / memmap_s,
                "growth_mb": memmap_growth,
                "rss_growth_share_of_data": memmap_growth["rss"] / data_mb,
            },
        },
        "checks": {
            "blocks_match_the_files": ok,
            "all_draws_made": drawn == args.draws,
            "anon_growth_under_5pct_of_data": anon_growth < 0.05 * data_mb,
            "rss_growth_under_5pct_of_data": growth["rss"] < 0.05 * data_mb,
        },
    }


def print_table(report: dict[str, Any]) -> None:
    res, cfg = report["results"], report["config"]
    print(
        f"token files: {cfg['tokens']:.3g} uint16 tokens ({res['data_mb']:.0f} MB) over "
        f"{cfg['domains']} domains, {res['blocks']} blocks of {cfg['block_size']}+1 tokens; "
        f"{res['drawn']} draws (per domain {res['drawn_per_domain']}), batch "
        f"{cfg['batch_size']}, workers {cfg['workers']}"
    )
    print()
    print(f"{'stage':<10} {'rss MB':>9} {'anon MB':>9} {'file MB':>9}")
    for stage, mem in res["memory_mb"].items():
        print(
            f"{stage:<10} {mem.get('rss', float('nan')):9.1f} "
            f"{mem.get('anon', float('nan')):9.1f} {mem.get('file', float('nan')):9.1f}"
        )
    grow = res["growth_after_first_batch_mb"]
    total = res["growth_iterate_mb"]
    build = res["growth_build_mb"]
    print()
    print(f"build: {res['build_ms']:.1f} ms, memory +{build.get('anon', build['rss']):.2f} MB anon")
    print(
        f"iterate: {res['iterate_s']:.2f} s ({res['blocks_per_s']:.0f} blocks/s, "
        f"{res['tokens_per_s'] / 1e6:.2f} M tokens/s, with the sampler, collate and the check "
        f"of every block); memory from the first batch to the "
        f"last: +{grow.get('anon', 0):.2f} MB anon, +{grow.get('file', 0):.2f} MB file pages, "
        f"+{grow['rss']:.2f} MB rss (token data {res['data_mb']:.0f} MB; anon growth = "
        f"{100 * res['anon_growth_share_of_data']:.2f} % of it); with the first batch: "
        f"+{total.get('anon', 0):.2f} MB anon, +{total['rss']:.2f} MB rss"
    )
    print(
        f"the same blocks read from TokenBlocks directly (no DataLoader, no check): "
        f"{res['direct_read_s']:.3f} s ({res['direct_blocks_per_s']:.0f} blocks/s)"
    )
    base = res["memmap_baseline"]
    bg = base["growth_mb"]
    print(
        f"baseline np.memmap slices of the same blocks: {base['read_s']:.3f} s "
        f"({base['blocks_per_s']:.0f} blocks/s); memory +{bg.get('anon', 0):.2f} MB anon, "
        f"+{bg.get('file', 0):.2f} MB file pages, +{bg['rss']:.2f} MB rss "
        f"({100 * base['rss_growth_share_of_data']:.1f} % of the token data)"
    )
    print(f"checks: {report['checks']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default=None, help="tokens in all (default 1e8)")
    parser.add_argument("--domains", type=int, default=3, help="domains (default 3)")
    parser.add_argument("--block-size", type=int, default=1024, help="tokens per block")
    parser.add_argument("--draws", type=int, default=None, help="blocks drawn (default 2000)")
    parser.add_argument("--batch-size", type=int, default=8, help="DataLoader batch size")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    parser.add_argument("--tmp", default=None, help="directory for the temporary files")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1e6 tokens, 200 draws unless given"
    )
    args = parser.parse_args(argv)
    if args.tokens is None:
        args.tokens = "1e6" if args.quick else "1e8"
    if args.draws is None:
        args.draws = 200 if args.quick else 2000
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return report


if __name__ == "__main__":
    main()
