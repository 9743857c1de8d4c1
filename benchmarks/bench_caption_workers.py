"""Benchmark: the caption stage of the default run with 1 and with N worker processes.

The default city (central São Paulo, 615 regions of 250 m, rendered OSM tiles) is prepared once
up to the tiles stage (or ``--run DIR``, a run folder whose tiles stage is done), then the
caption stage of the ``offline-demo`` profile (the OSM captioner in three styles, CAPTURE
consensus with the rule-based parser) runs on a fresh copy for each ``--workers`` value, with
empty caches, each in a fresh process (as ``urbangeo caption`` runs). The outputs are
compared: ``captions.jsonl`` (every record, in order, less its ``time`` and ``seconds``),
``caption_parses.jsonl`` and the ``captions`` table must be identical. Prints each wall time,
the CPU time of the stage's process and of its workers, and the speed-up against the first
value. Target: >= 1.7x with 2 workers on an otherwise idle 2-core machine.

Run from the repository root::

    .venv/bin/python benchmarks/bench_caption_workers.py [--workers 1,2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _runs import PROFILE, prepared_run

from urbangeo import constants as C
from urbangeo.captions.stages import PARSES_JSONL
from urbangeo.io.gpkg import read_layer
from urbangeo.model.threads import available_cores
from urbangeo.progress import set_mode
from urbangeo.settings import profile
from urbangeo.stage import run_stage


def caption_once(source: Path, folder: Path, workers: int) -> dict:
    """Copy the run's inputs into ``folder`` and time its caption stage with ``workers``, in a
    fresh process (as `urbangeo caption` runs: WordNet, MiniLM and spaCy loaded once)."""
    folder.mkdir(parents=True)
    shutil.copy2(source / "run.gpkg", folder / "run.gpkg")
    shutil.copytree(source / "images", folder / "images")
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(folder / "run.gpkg"), "--workers", str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def one(gpkg: Path, workers: int) -> None:
    """The caption stage on ``gpkg``; prints its wall and CPU seconds (this process and its
    workers) as JSON."""
    settings = profile(PROFILE).get("caption", {})
    started, cpu = time.perf_counter(), time.process_time()
    run_stage("caption", gpkg, overwrite=True, workers=workers, **settings)
    wall = time.perf_counter() - started
    cpu_main = time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu_main": cpu_main, "cpu_workers": workers_cpu()}))


def workers_cpu() -> float:
    """CPU seconds of the worker processes (and of the fork server they came from), all
    finished by now."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = children.ru_utime + children.ru_stime
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    stat = Path(f"/proc/{pid}/stat")
    if not pid or not stat.exists():
        return spawned
    # utime, stime, cutime, cstime: the server's own and its reaped children's (the workers)
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return spawned + sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def outputs(folder: Path) -> dict:
    """What must not depend on the number of workers."""
    records = []
    for line in (folder / C.CAPTIONS_JSONL).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record.pop("time", None)
        record.pop("seconds", None)
        records.append(record)
    parses = folder / PARSES_JSONL
    return {
        "captions.jsonl": records,
        PARSES_JSONL: parses.read_text(encoding="utf-8") if parses.exists() else "",
        "table": read_layer(folder / "run.gpkg", C.LAYER_CAPTIONS),
    }


def same(a: dict, b: dict) -> list[str]:
    """The outputs that differ."""
    diff = [k for k in ("captions.jsonl", PARSES_JSONL) if a[k] != b[k]]
    try:
        pd.testing.assert_frame_equal(a["table"], b["table"], check_exact=True)
    except AssertionError:
        diff.append("table")
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a run folder whose tiles stage is done")
    parser.add_argument("--workers", default="1,2", help="comma-separated (default 1,2)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, interleaved")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # one timed run
    args = parser.parse_args()
    set_mode("none")
    if args.one:
        one(args.one, int(args.workers))
        return
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-caption-") as tmp:
        root = Path(tmp)
        source = prepared_run(root, args.run, ("grid", "sample", "tiles"))
        times: dict[int, list[dict]] = {w: [] for w in counts}
        reference = None
        for r in range(args.repeat):
            for w in counts:
                folder = root / f"caption-w{w}-r{r}"
                timing = caption_once(source, folder, w)
                times[w].append(timing)
                out = outputs(folder)
                if reference is None:
                    reference = out
                    diff: list[str] = []
                else:
                    diff = same(reference, out)
                status = "identical" if not diff else "DIFFERENT: " + ", ".join(diff)
                print(
                    f"round {r + 1} workers={w}: {timing['wall']:.1f} s (CPU: "
                    f"{timing['cpu_main']:.1f} s this process, {timing['cpu_workers']:.1f} s "
                    f"workers), outputs {status}"
                )
                if diff:
                    sys.exit(1)
                shutil.rmtree(folder)
    best = {w: min(t["wall"] for t in v) for w, v in times.items()}
    base = best[counts[0]]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cores usable: {available_cores()}; load average now: {load:.2f}")
    for w in counts:
        print(f"workers={w}: best {best[w]:.1f} s, speed-up {base / best[w]:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"times": times, "cores": available_cores(), "load": load}, indent=2)
        )


if __name__ == "__main__":
    main()
