"""Benchmark: the tiles stage (rendered OSM map tiles) of the default city with 1 and with N
worker processes, on an idle machine and beside a busy process.

The default city (central São Paulo, 615 regions of 250 m) is prepared once up to the grid
(or ``--run DIR``, a run folder whose grid stage is done), then the tiles stage renders the
bundled extract for each ``--sizes`` value (the ``offline-demo`` profile's 64 px, and 512 px:
enough drawing for the workers to be used) and each ``--workers`` value, on a fresh copy, each
in a fresh process (as ``urbangeo tiles`` runs: the workers' start is paid). The outputs are
compared: every PNG's bytes and the ``images`` layer must be identical. With ``--busy`` every
measurement is repeated beside a second process that spins on one core (a Python busy loop),
to show what ``--workers auto`` (one process per core) does when a core is taken. Prints each
wall time, the CPU time of the stage's process and of its workers, and the speed-up against
the first ``--workers`` value.

Run from the repository root::

    .venv/bin/python benchmarks/bench_tiles_workers.py [--sizes 64,512] [--workers 1,2] \\
        [--repeat 2] [--busy]
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
from _runs import prepared_run

from urbangeo import constants as C
from urbangeo.io.gpkg import read_layer
from urbangeo.model.threads import available_cores
from urbangeo.progress import set_mode
from urbangeo.stage import run_stage


def tiles_once(source: Path, folder: Path, size: int, workers: str) -> dict:
    """Copy the run's grid into ``folder`` and time its tiles stage in a fresh process."""
    folder.mkdir(parents=True)
    shutil.copy2(source / "run.gpkg", folder / "run.gpkg")
    command = [sys.executable, __file__, "--one", str(folder / "run.gpkg")]
    command += ["--sizes", str(size), "--workers", workers]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def one(gpkg: Path, size: int, workers: str) -> None:
    """The tiles stage on ``gpkg``; prints its wall and CPU seconds (this process and its
    workers, reaped by the end) as JSON."""
    from urbangeo.imagery.sources import render_workers

    drawn = {"processes": 1}
    in_workers = render_workers.render_in_workers

    def spy(*args, **kwargs):
        drawn["processes"] = kwargs["workers"]
        return in_workers(*args, **kwargs)

    render_workers.render_in_workers = spy
    started, cpu = time.perf_counter(), time.process_time()
    run_stage("tiles", gpkg, size=size, workers=workers if workers == "auto" else int(workers))
    wall = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu_main": time.process_time() - cpu,
                "cpu_workers": children.ru_utime + children.ru_stime,
                "processes": drawn["processes"],
            }
        )
    )


def outputs(gpkg: Path) -> tuple[dict[str, bytes], pd.DataFrame]:
    """What must not depend on the number of workers: the PNGs and the images layer."""
    folder = gpkg.parent / C.OVERHEAD_DIR
    files = {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}
    return files, read_layer(gpkg, C.LAYER_IMAGES)


def same(a: tuple[dict, pd.DataFrame], b: tuple[dict, pd.DataFrame]) -> list[str]:
    """The outputs that differ."""
    diff = [] if a[0] == b[0] else ["png files"]
    try:
        pd.testing.assert_frame_equal(a[1], b[1], check_exact=True)
    except AssertionError:
        diff.append("images layer")
    return diff


def busy_loop() -> subprocess.Popen:
    """A second process spinning on one core until it is stopped."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a run folder whose grid stage is done")
    parser.add_argument("--sizes", default="64,512", help="tile sizes, comma-separated")
    parser.add_argument("--workers", default="1,2", help="comma-separated (1, 2, auto...)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, interleaved")
    parser.add_argument("--busy", action="store_true", help="also beside a busy process")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # one timed run
    args = parser.parse_args()
    set_mode("none")
    if args.one:
        one(args.one, int(args.sizes), args.workers)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = args.workers.split(",")
    conditions = ["idle", "busy"] if args.busy else ["idle"]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tiles-") as tmp:
        root = Path(tmp)
        source = prepared_run(root, args.run, ("grid",))
        references: dict[int, tuple] = {}
        for r in range(args.repeat):
            for condition in conditions:
                spinner = busy_loop() if condition == "busy" else None
                try:
                    for size in sizes:
                        for w in counts:
                            folder = root / f"{condition}-s{size}-w{w}-r{r}"
                            timing = tiles_once(source, folder, size, w)
                            key = f"{condition} size={size} workers={w}"
                            results.setdefault(key, []).append(timing)
                            out = outputs(folder / "run.gpkg")
                            diff = same(references.setdefault(size, out), out)
                            status = "identical" if not diff else "DIFFERENT: " + ", ".join(diff)
                            print(
                                f"round {r + 1} {key}: {timing['wall']:.2f} s, drawn in "
                                f"{timing['processes']} process(es) (CPU: "
                                f"{timing['cpu_main']:.2f} s this process, "
                                f"{timing['cpu_workers']:.2f} s workers), outputs {status}",
                                flush=True,
                            )
                            if diff:
                                sys.exit(1)
                            shutil.rmtree(folder)
                finally:
                    if spinner is not None:
                        spinner.kill()
                        spinner.wait()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cores usable: {available_cores()}; load average now: {load:.2f}")
    for condition in conditions:
        for size in sizes:
            base = min(t["wall"] for t in results[f"{condition} size={size} workers={counts[0]}"])
            for w in counts:
                best = min(t["wall"] for t in results[f"{condition} size={size} workers={w}"])
                print(
                    f"{condition} size={size} workers={w}: best {best:.2f} s, "
                    f"speed-up {base / best:.2f}x"
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"results": results, "cores": available_cores(), "load": load}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
