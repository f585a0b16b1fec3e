"""One command for every language-model experiment: arms × seeds of the main job, one report.

    python recipes/experiments/run.py experiment=sow_lm              # the full study
    python recipes/experiments/run.py experiment=sow_lm --smoke      # a few steps, one seed
    python recipes/experiments/run.py experiment=domain_rules study.seeds='[0]' steps=100
    python recipes/experiments/run.py experiment=ablation_study --out /tmp/ablation
    python recipes/experiments/run.py experiment=sow_lm --threads 2     # torch threads per run

The command composes ``conf/train.yaml`` with ``experiment=<name>`` and the Hydra overrides
(``hydra.compose``; no Hydra output directories), reads the experiment's ``study:`` block and,
for every arm and seed, calls :func:`recipes.train.train` on the config merged with the arm
(``OmegaConf.merge(cfg, arm)``) with ``seed``, ``out_dir=<out>/<arm>/seed<seed>``,
``dashboard=false`` and ``checkpoint=false``. The ``study:`` block (every key optional except
``arms`` or ``presets``):

- ``arms``: name → overlay of the composed config (usually a ``reweight:`` block with the arm's
  sources; ``{}`` = the base config, which the experiments keep source-free; ``null`` = no such
  arm, so that a study built on another can drop arms).
- ``presets``: names of ``conf/reweight/*.yaml`` presets; each becomes an arm
  ``{reweight: <the preset file>}`` (loaded with ``OmegaConf.load``, so arms follow the presets).
  An arm of ``arms`` with a ``preset: <name>`` key starts from that preset and merges its own
  ``reweight:`` over it (``{preset: full, reweight: {name: no_static, sources: {static: null}}}``
  is the full preset without its static source).
- ``seeds``: the seeds (default ``[0, 1, 2]``).
- ``baseline``: an arm; the report adds, per arm, the first validation step where its mean
  (over seeds) mean validation loss is at or below the baseline's final one, and the ratio
  baseline steps / arm steps (DoReMi's "reaches the baseline's loss in 2.6× fewer steps").
- ``focus_domains``: domains whose validation loss the tables and figure show (default: all),
  with their minimum over training and final − minimum (a repeated small domain "turning up").
- ``reference_from``: an arm run first; its mean final per-domain validation loss fills the
  ``reference`` of every DoReMi rule (``rule.kind: doremi``) of the other arms that has none.
- ``smoke``: ``true`` runs the smoke settings (also ``--smoke``): :data:`SMOKE` and one seed.

Outputs in ``<out>`` (default ``results/<name>``, which gets a ``.gitignore`` of ``*`` when
this command creates it): each run's directory, and ``<name>.md`` (tables), ``<name>.json``
(study, composed config, corpus manifest, every run's summary, curves) and ``<name>.png``
(validation-loss curves per arm: mean over seeds with a min–max band, one panel per focus
domain; and the logged target domain shares per arm).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `reweight` and `recipes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from recipes.experiments.report import corpus_manifest, markdown_table, mean_std, pm, write_report

__all__ = [
    "SMOKE",
    "arms_of",
    "compose",
    "fill_reference",
    "load_run",
    "main",
    "run_study",
    "steps_to_reach",
    "summarise",
]

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
DEFAULT_SEEDS = (0, 1, 2)
SMOKE = (
    "steps=6",
    "val_every=3",
    "log_every=2",
    "warmup_steps=2",
    "batch_size=8",
    "model.d_model=16",
    "model.n_layers=1",
    "model.n_heads=2",
    "data.seq_len=64",
    "data.max_val_per_domain=4",
)
"""Overrides of a smoke run (a few steps of a tiny model: checks the pipeline, not the claim)."""
STUDY_KEYS = {"arms", "presets", "seeds", "baseline", "focus_domains", "reference_from", "smoke"}


# ---------------------------------------------------------------------- configuration


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def compose(overrides: Sequence[str], *, smoke: bool = False) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` (and, with ``smoke``, :data:`SMOKE`
    for the keys the overrides do not set); ``study.smoke=true`` in the overrides also turns
    the smoke settings on."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    def _compose(items: list[str]) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="train", overrides=items)

    overrides = list(overrides)
    cfg = _compose(overrides)
    if smoke or bool(OmegaConf.select(cfg, "study.smoke", default=False)):
        given = {_key(o) for o in overrides}
        cfg = _compose([o for o in SMOKE if _key(o) not in given] + overrides)
        with open_dict(cfg):
            cfg.study.smoke = True
    return cfg


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _preset(name: Any, where: str) -> DictConfig:
    """``conf/reweight/<name>.yaml``; an unknown name is a ValueError naming ``where``."""
    path = CONF_DIR / "reweight" / f"{name}.yaml"
    if not path.is_file():
        valid = sorted(p.stem for p in (CONF_DIR / "reweight").glob("*.yaml"))
        raise ValueError(f"{where} names {name!r}; valid presets: {valid}.")
    loaded = OmegaConf.load(path)
    assert isinstance(loaded, DictConfig)
    return loaded


def arms_of(study: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The study's arms: name → overlay (``arms``, then one per name of ``presets``)."""
    unknown = sorted(set(study) - STUDY_KEYS)
    if unknown:
        raise ValueError(f"study has unknown keys {unknown}; valid keys: {sorted(STUDY_KEYS)}.")
    arms: dict[str, dict[str, Any]] = {}
    for name, overlay in (study.get("arms") or {}).items():
        if overlay is None:  # `arms.<name>: null` switches an arm off (e.g. in an overlay)
            continue
        arm = dict(overlay)
        if "preset" in arm:  # a preset with changes: `reweight:` merged over the preset file
            preset = _preset(arm.pop("preset"), f"study.arms.{name}.preset")
            arm["reweight"] = _plain(OmegaConf.merge(preset, arm.get("reweight") or {}))
        arms[str(name)] = arm
    for preset in study.get("presets") or []:
        if str(preset) in arms:
            raise ValueError(f"arm {preset!r} is given both in study.arms and study.presets.")
        arms[str(preset)] = {"reweight": _plain(_preset(preset, "study.presets"))}
    if not arms:
        raise ValueError("study has no arms: give study.arms (name → overlay) or study.presets.")
    for key in ("baseline", "reference_from"):
        if study.get(key) is not None and study[key] not in arms:
            raise ValueError(f"study.{key} is {study[key]!r}, not an arm; arms: {list(arms)}.")
    return arms


def fill_reference(arm: Mapping[str, Any], reference: Mapping[str, float]) -> dict[str, Any]:
    """A copy of ``arm`` where every DoReMi rule (``reweight.sources.*.rule.kind == doremi``)
    without a ``reference`` gets ``reference`` (domain name → loss).

    Example:
        >>> arm = {"reweight": {"sources": {"m": {"rule": {"kind": "doremi"}}}}}
        >>> fill_reference(arm, {"a": 2.0})["reweight"]["sources"]["m"]["rule"]["reference"]
        {'a': 2.0}
    """
    out = json.loads(json.dumps(_plain(dict(arm))))
    sources = (out.get("reweight") or {}).get("sources") or {}
    for spec in sources.values():
        rule = (spec or {}).get("rule")
        if isinstance(rule, dict) and rule.get("kind") == "doremi" and not rule.get("reference"):
            rule["reference"] = {str(k): float(v) for k, v in reference.items()}
    return out


def _run_config(cfg: DictConfig, arm: Mapping[str, Any], seed: int, out_dir: Path) -> DictConfig:
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    plain.pop("study", None)
    merged = OmegaConf.merge(OmegaConf.create(plain), OmegaConf.create(dict(arm)))
    if not isinstance(merged, DictConfig):  # pragma: no cover - a mapping merged is a mapping
        raise TypeError(f"arm {dict(arm)!r} did not merge into a mapping config.")
    merged.seed = int(seed)
    merged.out_dir = str(out_dir)
    merged.dashboard = False
    merged.checkpoint = False
    merged.resume = None
    if OmegaConf.select(merged, "logger.kind") == "wandb":  # cheap logging: metrics.jsonl + CSV
        merged.logger = OmegaConf.create({"kind": "csv"})
    return merged


# ---------------------------------------------------------------------- reading runs


def load_run(run_dir: str | Path, domains: Sequence[str], steps: int) -> dict[str, Any]:
    """One run's numbers from ``summary.json`` and ``metrics.jsonl``: final per-domain, mean
    and worst-domain validation loss, the validation curves (x = optimizer steps trained), the
    logged target and realised domain shares, and the wall time."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    val: dict[int, dict[str, float]] = {}
    shares: dict[int, dict[str, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if f"val/loss/{domains[0]}" in row:
            # Lightning logs a validation after k optimizer steps at step k − 1; the closing
            # trainer.validate at `steps`: min(step + 1, steps) is the steps trained in both.
            x = min(int(row["step"]) + 1, steps)
            val[x] = {d: float(row[f"val/loss/{d}"]) for d in domains}
        for kind in ("target", "realised"):
            for d in domains:
                key = f"reweight/domain/{d}/{kind}"
                if key in row:
                    shares.setdefault(int(row["step"]), {})[f"{d}/{kind}"] = float(row[key])
    final = {d: float(summary[f"val/loss/{d}"]) for d in domains}
    xs = sorted(val)
    curves = {d: [val[x][d] for x in xs] for d in domains}
    curves["mean"] = [float(np.mean([val[x][d] for d in domains])) for x in xs]
    curves["worst"] = [max(val[x][d] for d in domains) for x in xs]
    share_steps = sorted(shares)
    return {
        "final": final,
        "mean": float(np.mean(list(final.values()))),
        "worst": max(final.values()),
        "steps": xs,
        "curves": curves,
        "share_steps": share_steps,
        "shares": {
            key: [shares[s].get(key, math.nan) for s in share_steps]
            for key in sorted({k for row in shares.values() for k in row})
        },
        "seconds": float(summary.get("seconds", math.nan)),
        "summary": summary,
    }


def steps_to_reach(steps: Sequence[int], values: Sequence[float], target: float) -> float:
    """The first step whose value is at or below ``target`` (NaN if none).

    Example:
        >>> steps_to_reach([10, 20, 30], [3.0, 2.5, 2.0], 2.5)
        20.0
        >>> steps_to_reach([10, 20], [3.0, 2.9], 2.5)
        nan
    """
    for step, value in zip(steps, values, strict=True):
        if math.isfinite(value) and value <= target:
            return float(step)
    return math.nan


def _mean_curve(runs: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], np.ndarray]:
    """Steps every run validated at, and the (runs × steps) matrix of curve ``key``."""
    common = sorted(set.intersection(*(set(r["steps"]) for r in runs)))
    rows = [[dict(zip(r["steps"], r["curves"][key], strict=True))[x] for x in common] for r in runs]
    return common, np.asarray(rows, dtype=np.float64).reshape(len(runs), len(common))


def summarise(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    domains: Sequence[str],
    *,
    baseline: str | None = None,
    focus: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per arm: values over seeds of the mean, worst and per-domain final validation loss, the
    wall time, the mean-over-seeds curves, and the study extras (``baseline``: steps to reach
    the baseline's final mean loss and the speed-up; ``focus``: minimum over training and
    final − minimum per focus domain)."""
    shown = list(focus or domains)
    out: dict[str, dict[str, Any]] = {}
    for arm, runs in results.items():
        entry: dict[str, Any] = {
            "mean": [r["mean"] for r in runs],
            "worst": [r["worst"] for r in runs],
            "final": {d: [r["final"][d] for r in runs] for d in domains},
            "seconds": [r["seconds"] for r in runs],
            "curves": {},
        }
        for key in ["mean", "worst", *domains]:
            steps, matrix = _mean_curve(runs, key)
            entry["curves"][key] = {
                "steps": steps,
                "mean": matrix.mean(axis=0).tolist(),
                "min": matrix.min(axis=0).tolist(),
                "max": matrix.max(axis=0).tolist(),
            }
        if focus:
            entry["focus"] = {}
            for d in shown:
                minima = [min(r["curves"][d]) for r in runs]
                entry["focus"][d] = {
                    "min": minima,
                    "final": entry["final"][d],
                    "turn_up": [f - m for f, m in zip(entry["final"][d], minima, strict=True)],
                }
        out[arm] = entry
    if baseline is not None:
        base_curve = out[baseline]["curves"]["mean"]
        target = base_curve["mean"][-1]
        base_steps = steps_to_reach(base_curve["steps"], base_curve["mean"], target)
        for entry in out.values():
            curve = entry["curves"]["mean"]
            arm_steps = steps_to_reach(curve["steps"], curve["mean"], target)
            entry["to_baseline"] = {
                "target": target,
                "steps": arm_steps,
                "baseline_steps": base_steps,
                "speedup": base_steps / arm_steps if arm_steps > 0 else math.nan,
            }
    return out


# ---------------------------------------------------------------------- the report


def _tables(
    summary: Mapping[str, Mapping[str, Any]], domains: Sequence[str], focus: Sequence[str] | None
) -> str:
    shown = list(focus or domains)
    header = ["arm", "mean val loss", "worst-domain val loss", *shown, "seconds / run"]
    rows = [
        [
            arm,
            pm(e["mean"]),
            pm(e["worst"]),
            *(pm(e["final"][d]) for d in shown),
            pm(e["seconds"], ".0f"),
        ]
        for arm, e in summary.items()
    ]
    parts = [markdown_table(header, rows)]
    if any("to_baseline" in e for e in summary.values()):
        rows = []
        for arm, e in summary.items():
            tb = e["to_baseline"]
            rows.append([arm, f"{tb['steps']:.0f}", f"{tb['speedup']:.2f}×"])
        target = next(iter(summary.values()))["to_baseline"]["target"]
        parts.append(
            f"Steps to reach the baseline's final mean validation loss ({target:.4f}, mean over "
            "seeds; nan: never):\n\n"
            + markdown_table(["arm", "steps", "baseline steps / arm steps"], rows)
        )
    if any("focus" in e for e in summary.values()):
        rows = []
        for arm, e in summary.items():
            for d, f in e["focus"].items():
                rows.append([arm, d, pm(f["min"]), pm(f["final"]), pm(f["turn_up"])])
        parts.append(
            "Focus domains: minimum validation loss over training, final, and final − minimum "
            "(> 0: the loss turned up):\n\n"
            + markdown_table(["arm", "domain", "minimum", "final", "final − minimum"], rows)
        )
    return "\n\n".join(parts)


def _varying_targets(run: Mapping[str, Any], domains: Sequence[str]) -> bool:
    """Whether a run logged target domain shares that change over training."""
    for d in domains:
        values = np.asarray(run["shares"].get(f"{d}/target", []), dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size and np.ptp(values) > 1e-9:
            return True
    return False


def _figure(
    summary: Mapping[str, Mapping[str, Any]],
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    domains: Sequence[str],
    focus: Sequence[str] | None,
) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dev dependency
        return None
    panels = ["mean", *(focus or domains)]
    share_arms = [a for a, runs in results.items() if _varying_targets(runs[0], domains)]
    cols = max(len(panels), len(share_arms), 1)
    nrows = 2 if share_arms else 1
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.0 * nrows), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=False):
        for arm, entry in summary.items():
            c = entry["curves"][key]
            (line,) = ax.plot(c["steps"], c["mean"], label=arm)
            ax.fill_between(c["steps"], c["min"], c["max"], color=line.get_color(), alpha=0.2)
        ax.set_title("mean over domains" if key == "mean" else key)
        ax.set_xlabel("step")
        ax.set_ylabel("val loss (nats/byte)")
    axes[0][0].legend(fontsize=7)
    for ax, arm in zip(axes[1] if share_arms else [], share_arms, strict=False):
        run = results[arm][0]
        for d in domains:
            values = run["shares"].get(f"{d}/target")
            if values:
                ax.plot(run["share_steps"], values, label=d)
        ax.set_title(f"{arm}: target domain shares (seed {run['summary'].get('seed', 0)})")
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
    if share_arms:
        axes[1][0].legend(fontsize=7)
    for row in axes:
        for ax in row:
            if not ax.has_data():
                ax.set_visible(False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- the study


def _prepare_out(out: Path) -> None:
    if not out.exists():
        out.mkdir(parents=True)
        (out / ".gitignore").write_text("# written by recipes/experiments/run.py\n*\n")


def run_study(cfg: DictConfig, out: str | Path, *, name: str) -> dict[str, Any]:
    """Runs every arm × seed of ``cfg.study`` into ``out`` and writes the report; returns the
    JSON record."""
    from recipes.train import load_corpus, train

    out = Path(out)
    _prepare_out(out)
    with open_dict(cfg):
        cfg.out_dir = str(out)
    study = _plain(cfg.get("study")) or {}
    arms = arms_of(study)
    smoke = bool(study.get("smoke", False))
    seeds = [int(s) for s in (study.get("seeds") or DEFAULT_SEEDS)]
    if smoke:
        seeds = seeds[:1]
    corpus = load_corpus(cfg.data)
    domains = [str(d) for d in corpus.domain_names]
    focus = study.get("focus_domains")
    if focus:
        bad = [d for d in focus if d not in domains]
        if bad:
            raise ValueError(f"study.focus_domains has unknown {bad}; domains: {domains}.")
    steps = int(cfg.steps)

    order = list(arms)
    reference_arm = study.get("reference_from")
    if reference_arm is not None:
        order.remove(reference_arm)
        order.insert(0, reference_arm)
    results: dict[str, list[dict[str, Any]]] = {}
    runs: list[dict[str, Any]] = []
    reference: dict[str, float] | None = None
    start = time.perf_counter()
    for arm_name in order:
        arm = arms[arm_name]
        if reference is not None and arm_name != reference_arm:
            arm = fill_reference(arm, reference)
        for seed in seeds:
            run_dir = out / arm_name / f"seed{seed}"
            if run_dir.exists():  # metrics.jsonl is appended to: start each run afresh
                shutil.rmtree(run_dir)
            run_cfg = _run_config(cfg, arm, seed, run_dir)
            print(f"[run.py] {name}: arm {arm_name}, seed {seed} -> {run_dir}", flush=True)
            train(run_cfg)
            result = load_run(run_dir, domains, steps)
            result["summary"]["seed"] = seed
            results.setdefault(arm_name, []).append(result)
            runs.append(
                {
                    "arm": arm_name,
                    "seed": seed,
                    "out_dir": str(run_dir),
                    "arm_config": _plain(arm),
                    "summary": result["summary"],
                }
            )
        if arm_name == reference_arm:
            finals = results[arm_name]
            reference = {d: mean_std([r["final"][d] for r in finals])[0] for d in domains}
    results = {a: results[a] for a in arms}  # report in the config's order
    summary = summarise(results, domains, baseline=study.get("baseline"), focus=focus)

    lines = [
        f"# {name}",
        "",
        f"`{' '.join(['python recipes/experiments/run.py', *sys.argv[1:]])}`",
        "",
        f"{len(arms)} arms × seeds {seeds}, {steps} steps each"
        + (" (smoke settings: checks the pipeline, not the claim)" if smoke else "")
        + f"; final validation loss (nats/byte), mean ± std over seeds; total "
        f"{time.perf_counter() - start:.0f} s.",
        "",
        _tables(summary, domains, focus),
    ]
    if reference is not None:
        lines += [
            "",
            f"DoReMi reference losses (mean final of arm `{reference_arm}`): "
            + ", ".join(f"{d} {v:.4f}" for d, v in reference.items()),
        ]
    record = {
        "name": name,
        "study": study,
        "seeds": seeds,
        "smoke": smoke,
        "config": _plain(cfg),
        "corpus": corpus_manifest(corpus),
        "reference": reference,
        "summary": summary,
        "runs": runs,
    }
    write_report(
        out,
        name,
        markdown="\n".join(lines),
        record=record,
        figure=_figure(summary, results, domains, focus),
    )
    return record


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides; experiment=<name> needed")
    parser.add_argument("--smoke", action="store_true", help="a few steps, one seed")
    parser.add_argument("--out", default=None, help="output directory (default results/<name>)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (default 1: on shared cores, more threads than free cores "
        "slow a small model's steps up to 10×)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}.")
    experiments = [o.split("=", 1)[1] for o in args.overrides if _key(o) == "experiment"]
    if not experiments:
        valid = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
        parser.error(f"give experiment=<name>; experiments: {valid}")
    name = experiments[-1]
    cfg = compose(args.overrides, smoke=args.smoke)
    if cfg.get("study") is None:
        parser.error(f"experiment={name} has no study: block (it is a recipes/train.py overlay).")
    out = Path(args.out) if args.out else Path("results") / name
    with open_dict(cfg):
        cfg.out_dir = str(out)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        record = run_study(cfg, out, name=name)
    finally:
        torch.set_num_threads(threads)
    print(f"[run.py] wrote {out / name}.md, .json, .png")
    return record


if __name__ == "__main__":
    main()
