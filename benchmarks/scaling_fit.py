"""Growth fits: how each stage's time grows with the number of regions, from finished runs.

Reads the stage records of run folders (the seconds and settings `urbangeo status` shows) and,
for each stage, groups the runs whose settings for that stage are the same (less the keys that
name the run or its size: ``--ignore``), then fits ``seconds = a + b * regions`` by least
squares and the growth exponent ``k`` of ``seconds ~ regions^k`` (a line through the logs).
``b`` is the cost of one more region; ``k`` near 1 is linear growth, near 0 a fixed cost.
Prints a Markdown table; stages run with other settings in some runs are fitted per group.

Run from the repository root, e.g. on the scaling table's runs::

    .venv/bin/python benchmarks/scaling_fit.py /tmp/scale/sp500 /tmp/scale/sp100 \\
        /tmp/scale/sp50 /tmp/scale/sp20 /tmp/scale/m1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from urbangeo import constants as C
from urbangeo.io.runs import read_stage_records

#: Keys of a stage's settings that differ between the runs of a scaling series by design (the
#: size, paths in the run's folder, statistics of its images).
IGNORE = ("cell_size", "force", "model_path", "checkpoint", "image_mean", "image_std")


def runs_table(folders: list[Path], ignore: tuple[str, ...]) -> list[dict]:
    """One row per (run, stage): regions, seconds and the stage's settings less ``ignore`` and
    less the keys that some runs' records lack (settings added since: their defaults)."""
    runs = {folder: read_stage_records(folder / "run.gpkg") for folder in folders}
    common: dict[str, set[str]] = {}
    for records in runs.values():
        for stage, record in records.items():
            keys = set(record.params) - set(ignore)
            common[stage] = common[stage] & keys if stage in common else keys
    rows = []
    for folder, records in runs.items():
        regions = int(records["grid"].counts["regions"])
        for stage, record in records.items():
            settings = {k: v for k, v in record.params.items() if k in common[stage]}
            rows.append(
                {
                    "run": folder.name,
                    "stage": stage,
                    "regions": regions,
                    "seconds": record.seconds,
                    "settings": json.dumps(settings, sort_keys=True),
                }
            )
    return rows


def fit(regions: np.ndarray, seconds: np.ndarray) -> dict:
    """Least-squares ``a + b * n`` and the log-log slope ``k`` (None with fewer than 2 sizes)."""
    if len(set(regions.tolist())) < 2:
        return {"a": None, "b": None, "k": None}
    b, a = np.polyfit(regions, seconds, 1)
    k = np.polyfit(np.log(regions), np.log(np.maximum(seconds, 1e-3)), 1)[0]
    return {"a": float(a), "b": float(b), "k": float(k)}


def _num(x: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if x is None else f"{x * scale:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with run.gpkg)")
    parser.add_argument("--ignore", default=",".join(IGNORE), help="settings keys to ignore")
    args = parser.parse_args()
    rows = runs_table(args.runs, tuple(k for k in args.ignore.split(",") if k))
    print("| stage | runs (regions) | seconds | a (s) | b (ms/region) | k |")
    print("|---|---|---|---|---|---|")
    for stage in C.STAGES:
        mine = [r for r in rows if r["stage"] == stage]
        groups: dict[str, list[dict]] = {}
        for r in mine:
            groups.setdefault(r["settings"], []).append(r)
        for i, group in enumerate(sorted(groups.values(), key=len, reverse=True)):
            group.sort(key=lambda r: r["regions"])
            n = np.array([r["regions"] for r in group], dtype=float)
            s = np.array([r["seconds"] for r in group], dtype=float)
            f = fit(n, s)
            name = stage if len(groups) == 1 else f"{stage} ({chr(ord('A') + i)})"
            sizes = ", ".join(f"{r['run']} ({r['regions']:,})" for r in group)
            secs = ", ".join(f"{x:,.1f}" for x in s)

            print(
                f"| {name} | {sizes} | {secs} | {_num(f['a'], digits=1)} | "
                f"{_num(f['b'], 1000, 3)} | {_num(f['k'])} |"
            )


if __name__ == "__main__":
    main()
