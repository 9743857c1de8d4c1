"""How fast the QGIS plugin imports and its panel opens, in a real (offscreen) QGIS.

Run under QGIS's Python, e.g. after `make test` created it:

    QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python benchmarks/bench_qgis_panel.py

Prints the median of --repeat fresh processes (import time and first-open time are one-off
costs per QGIS session, so each repeat is a new process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE_RUN = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from qgis.core import QgsApplication
app = QgsApplication([], True)
app.initQgis()
from qgis.PyQt.QtWidgets import QMainWindow
t0 = time.perf_counter()
import qgis_plugin
from qgis_plugin.plugin import UrbangeoPlugin
t1 = time.perf_counter()

class Iface:
    def __init__(self):
        self.window = QMainWindow()
    def mainWindow(self):
        return self.window
    def addDockWidget(self, area, dock):
        self.window.addDockWidget(area, dock)
    def addToolBarIcon(self, action):
        pass
    def addPluginToMenu(self, name, action):
        pass

plugin = UrbangeoPlugin(Iface())
plugin.initGui()
t2 = time.perf_counter()
dock = plugin.show_dock()
app.processEvents()
t3 = time.perf_counter()
heavy = [m for m in ("torch", "open_clip", "urbangeo", "geopandas") if m in sys.modules]
print(json.dumps({"import_s": t1 - t0, "init_gui_s": t2 - t1, "open_dock_s": t3 - t2,
                  "heavy_modules": heavy}))
del dock
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        out = subprocess.run(
            [sys.executable, "-c", ONE_RUN, str(ROOT)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for key in ("import_s", "init_gui_s", "open_dock_s"):
        values = [r[key] for r in runs]
        print(
            f"{key:12s} median {statistics.median(values) * 1000:7.1f} ms  "
            f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})"
        )
    print(
        "heavy modules imported:", sorted({m for r in runs for m in r["heavy_modules"]}) or "none"
    )


if __name__ == "__main__":
    main()
