"""Benchmark: rank 100,000 sites x 36 leaves x 2 rounds from a CSV, against a pandas baseline.

Run: python bench/bench_rank.py [--sites 100000] [--repeat 3]
Prints the engine's end-to-end time (read, validate, merge rounds, rank, every
statistic) next to a plain pandas read_csv + groupby(last) + rank baseline over the
same file, measured in the same run, and the ratio. Targets: < 5 s, <= 1.5x pandas.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mailprobe.engine import evaluate
from mailprobe.rubric import Rubric, load_rubric


def make_sheet(rubric: Rubric, sites: int, path: Path, seed: int = 7) -> None:
    """Round 1 scores every leaf; round 2 re-checks about a third of the cells."""
    rng = np.random.default_rng(seed)
    weights = np.array([leaf.weight for leaf in rubric.leaves])
    steps = np.array([leaf.step for leaf in rubric.leaves])
    r1 = np.floor(rng.random((sites, len(weights))) * (weights / steps + 1)) * steps
    r2 = np.floor(rng.random((sites, len(weights))) * (weights / steps + 1)) * steps
    r2[rng.random(r2.shape) > 0.33] = np.nan
    names = np.array([f"单位{i:06d}" for i in range(sites)], dtype=object)
    frame = pd.DataFrame(np.vstack([r1, r2]), columns=rubric.short_names())
    frame.insert(0, "轮次", np.repeat([1, 2], sites))
    frame.insert(0, "单位", np.concatenate([names, names]))
    frame.to_csv(path, index=False, float_format="%g")


def pandas_baseline(rubric: Rubric, path: Path) -> pd.Series:
    frame = pd.read_csv(path)
    leaves = rubric.short_names()
    merged = frame.sort_values(["单位", "轮次"]).groupby("单位", sort=True)[leaves].last()
    groups = {g.name: merged.iloc[:, list(g.leaf_indices)].sum(axis=1)
              for g in rubric.groups if g.depth == 1}
    total = merged.sum(axis=1)
    rank = total.rank(method="min", ascending=False)
    stage = pd.cut(total, [s.lower for s in rubric.stages] + [np.inf], right=False)
    _ = (merged.mean(), pd.DataFrame(groups).mean(), stage.value_counts(), total.max(),
         total.min())
    return rank


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rubric = load_rubric("city")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scores.csv"
        make_sheet(rubric, args.sites, path)
        size = path.stat().st_size / 1e6
        t_base, base_rank = best_of(args.repeat, lambda: pandas_baseline(rubric, path))
        t_ours, ev = best_of(args.repeat, lambda: evaluate(rubric, [path]))
    assert ev is not None and isinstance(base_rank, pd.Series)
    ours = dict(zip(ev.ranking.sites, ev.ranking.rank.tolist(), strict=True))  # type: ignore[attr-defined]
    agree = all(ours[name] == int(r) for name, r in base_rank.items())
    print(f"sheet: {args.sites:,} sites x {len(rubric.leaves)} leaves x 2 rounds "
          f"({2 * args.sites:,} rows, {size:.1f} MB CSV); best of {args.repeat}")
    print(f"{'pandas baseline (read_csv, groupby.last, rank)':<50} {t_base:7.3f} s")
    print(f"{'mailprobe evaluate (validate, merge, rank, stats)':<50} {t_ours:7.3f} s")
    print(f"ratio mailprobe / pandas: {t_ours / t_base:.2f}x (target <= 1.5x); "
          f"target < 5 s: {'met' if t_ours < 5 else 'MISSED'}; ranks agree: {agree}")


if __name__ == "__main__":
    main()
