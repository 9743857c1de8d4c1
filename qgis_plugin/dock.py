"""The urbangeo dock panel: choose an area and settings, run stages, watch progress, load layers."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsSettings,
    QgsTask,
    QgsVectorLayer,
)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from .command import SETTINGS_KEY, CommandNotFound, bundled_cities, find_executable
from .stages import STAGES, build_args, run_args
from .styles import load_run_layers
from .task import CommandTask

SOURCES = ("Bundled city", "Polygon layer", "Map canvas extent", "Place name (online)")
#: The layer `urbangeo similar` writes, and the field naming each region.
SIMILAR_LAYER = "similar"
REGION_ID = "region_id"
#: Shown until `urbangeo cities --json` answers (it replaces them with the installed list).
FALLBACK_CITIES = ("sao-paulo", "kotka", "helsinki")  # the default first


class UrbangeoDock(QDockWidget):
    """Dock panel that drives the urbangeo command."""

    def __init__(self, iface, parent=None) -> None:
        super().__init__("urbangeo", parent)
        self.setObjectName("UrbangeoDock")
        self.iface = iface
        self.task: CommandTask | None = None
        self._queue: list[tuple[str, list[str]]] = []
        self._gpkg: str | None = None
        self._load = load_run_layers
        self.cities_from_command = False
        self.setWidget(self._build())
        self._refresh_cities()

    # ---- layout ---------------------------------------------------------------------------

    def _build(self) -> QWidget:
        body = QWidget()
        outer = QVBoxLayout(body)

        area = QGroupBox("Area")
        form = QFormLayout(area)
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        form.addRow("Source", self.source)
        self.stack = QStackedWidget()
        self.city = QComboBox()
        self.city.addItems(FALLBACK_CITIES)
        self.layer = QgsMapLayerComboBox()
        self.layer.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.selected_only = QCheckBox("Selected features only")
        layer_box = QWidget()
        layer_row = QVBoxLayout(layer_box)
        layer_row.setContentsMargins(0, 0, 0, 0)
        layer_row.addWidget(self.layer)
        layer_row.addWidget(self.selected_only)
        self.extent_note = QLineEdit("The map canvas extent when you press a button")
        self.extent_note.setReadOnly(True)
        self.place = QLineEdit()
        self.place.setPlaceholderText("e.g. Kotka, Finland")
        for widget in (self.city, layer_box, self.extent_note, self.place):
            self.stack.addWidget(widget)
        self.source.currentIndexChanged.connect(self.stack.setCurrentIndex)
        form.addRow("", self.stack)
        self.cell_size = _spin(250, 10, 100_000, " m")  # the bundled cities are ~2 km across
        self.interval = _spin(500, 10, 10_000, " m")
        form.addRow("Cell size", self.cell_size)
        form.addRow("Sample interval", self.interval)
        self.network = QComboBox()
        self.network.addItems(["drive", "walk", "all"])
        form.addRow("Road network", self.network)
        outer.addWidget(area)

        data = QGroupBox("Images, captions, model")
        dform = QFormLayout(data)
        self.image_source = QComboBox()
        self.image_source.addItems(["Rendered OSM map (offline)", "GeoTIFF file", "XYZ tiles"])
        self.image_path = QLineEdit()
        self.image_path.setPlaceholderText("GeoTIFF path or https://…/{z}/{x}/{y}.png")
        self.captioner = QComboBox()
        self.captioner.addItems(["osm", "openai", "transformers"])
        self.model = QLineEdit("urbangeo-tiny-vit")
        self.checkpoint = QgsFileWidget()
        self.checkpoint.setFilter("Checkpoints (*.pt *.pth *.bin *.safetensors)")
        dform.addRow("Image source", self.image_source)
        dform.addRow("", self.image_path)
        dform.addRow("Captioner", self.captioner)
        dform.addRow("Model", self.model)
        dform.addRow("Checkpoint", self.checkpoint)
        outer.addWidget(data)

        out = QGroupBox("Output")
        oform = QFormLayout(out)
        self.out_dir = QgsFileWidget()
        self.out_dir.setStorageMode(QgsFileWidget.GetDirectory)
        self.out_dir.setFilePath(
            QgsSettings().value("urbangeo/out_dir", str(Path.home() / "urbangeo-runs"))
        )
        self.executable = QgsFileWidget()
        self.executable.setFilePath(QgsSettings().value(SETTINGS_KEY, ""))
        self.executable.fileChanged.connect(lambda p: QgsSettings().setValue(SETTINGS_KEY, p))
        oform.addRow("Run folder", self.out_dir)
        oform.addRow("urbangeo command", self.executable)
        outer.addWidget(out)

        buttons = QGridLayout()
        self.stage_buttons = {}
        for i, name in enumerate(STAGES):
            button = QPushButton(STAGES[name].title)
            button.setToolTip(STAGES[name].help)
            button.clicked.connect(lambda _=False, n=name: self.run_stage(n))
            buttons.addWidget(button, i // 2, i % 2)
            self.stage_buttons[name] = button
        outer.addLayout(buttons)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run pipeline")
        self.run_button.clicked.connect(self.run_pipeline)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        outer.addLayout(row)
        self.similar_button = QPushButton("Similar regions")
        self.similar_button.setToolTip(
            "Select regions of a run's regions layer, then press this: `urbangeo similar` finds "
            "the regions whose embeddings are most like theirs and adds the layer 'similar' "
            "(ranked by cosine similarity; the selected regions flagged)."
        )
        self.similar_button.clicked.connect(self.find_similar)
        outer.addWidget(self.similar_button)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        outer.addWidget(self.progress)
        outer.addWidget(self.log)
        return body

    def _refresh_cities(self) -> None:
        """Ask the command for its bundled cities in the background (the panel opens at once)."""
        try:
            exe = find_executable(self.executable.filePath() or None)
        except CommandNotFound:
            return  # the fallback list stays; running a stage will say how to set the path

        def fetch(task):
            return bundled_cities(exe)

        def update(exception, result=None):
            if exception is not None or not result:
                return
            current = self.city.currentText()
            self.city.clear()
            self.city.addItems([row["name"] for row in result])
            default = next((r["name"] for r in result if r.get("default")), None)
            self.city.setCurrentText(current if current in self._city_names() else default)
            self.cities_from_command = True

        self._cities_task = QgsTask.fromFunction("urbangeo: cities", fetch, on_finished=update)
        QgsApplication.taskManager().addTask(self._cities_task)

    def _city_names(self) -> list[str]:
        return [self.city.itemText(i) for i in range(self.city.count())]

    # ---- actions ----------------------------------------------------------------------------

    def run_dir(self) -> Path:
        """The run folder for the current settings."""
        base = Path(self.out_dir.filePath() or Path.home() / "urbangeo-runs")
        name = self.city.currentText() if self.source.currentIndex() == 0 else "area"
        return base / name

    def gpkg(self) -> str:
        """The run's GeoPackage."""
        return str(self.run_dir() / "run.gpkg")

    def boundary_values(self) -> dict:
        """The grid's boundary parameters for the chosen source."""
        index = self.source.currentIndex()
        if index == 0:
            return {"CITY": self.city.currentText()}
        if index == 1:
            from .provider import export_layer

            layer = self.layer.currentLayer()
            if layer is None:
                raise ValueError("Choose a polygon layer of the project as the area.")
            selected = self.selected_only.isChecked()
            return {"BOUNDARY_FILE": export_layer(layer, selected_only=selected)}
        if index == 2:
            from .provider import extent_to_bbox

            canvas = self.iface.mapCanvas()
            crs = canvas.mapSettings().destinationCrs()
            return {"BBOX": extent_to_bbox(canvas.extent(), crs)}
        if not self.place.text().strip():
            raise ValueError("Type a place name, e.g. 'Kotka, Finland'.")
        return {"PLACE": self.place.text().strip()}

    def stage_args(self, name: str) -> list[str]:
        """Arguments for one stage from the panel's settings."""
        values: dict = {
            "GPKG": self.gpkg(),
            "CELL_SIZE": self.cell_size.value(),
            "INTERVAL": self.interval.value(),
            "NETWORK": self.network.currentText(),
            "OVERWRITE": True,
        }
        if name == "grid":
            values.update(self.boundary_values())
        elif name == "tiles":
            source = self.image_source.currentIndex()  # 0: rendered OSM map (the default)
            if source and not self.image_path.text().strip():
                raise ValueError("Give the GeoTIFF path or the XYZ URL for the images.")
            key = {1: "RASTER", 2: "XYZ"}.get(source)
            if key:
                values[key] = self.image_path.text().strip()
        elif name == "caption":
            values["BACKEND"] = self.captioner.currentText()
        elif name == "train":
            values["MODEL"] = self.model.text().strip() or "urbangeo-tiny-vit"
        elif name == "embed":
            values["CHECKPOINT"] = self.checkpoint.filePath() or None
        return build_args(STAGES[name], values)

    def run_stage(self, name: str) -> None:
        """Run one stage."""
        self._start([(STAGES[name].title, self._guarded(lambda: self.stage_args(name)))])

    def run_pipeline(self) -> None:
        """Run every stage: ``urbangeo run`` for a bundled city, else the stages in turn."""
        if self.source.currentIndex() == 0:
            args = run_args(
                city=self.city.currentText(),
                run_dir=str(self.run_dir()),
                cell_size=self.cell_size.value(),
                interval=self.interval.value(),
                network=self.network.currentText(),
            )
            self._start([("Pipeline", args)])
        else:
            steps = [
                (stage.title, self._guarded(lambda n=name: self.stage_args(n)))
                for name, stage in STAGES.items()
            ]
            self._start(steps)

    def selected_regions(self) -> tuple[str, list[str]]:
        """The GeoPackage and the selected region ids of the regions layer: the active layer
        when it has selected regions, else the first layer of the project that has."""
        active = self.iface.activeLayer() if hasattr(self.iface, "activeLayer") else None
        layers = [active, *QgsProject.instance().mapLayers().values()]
        for layer in layers:
            if not isinstance(layer, QgsVectorLayer) or layer.selectedFeatureCount() == 0:
                continue
            if layer.fields().indexOf(REGION_ID) < 0 or layer.providerType() != "ogr":
                continue
            path = layer.source().split("|")[0]
            if not path.lower().endswith(".gpkg"):
                continue
            ids = [str(f[REGION_ID]) for f in layer.selectedFeatures()]
            return path, list(dict.fromkeys(ids))
        raise ValueError(
            "Select one or more regions of a run's regions layer (a GeoPackage layer with a "
            "region_id field) first."
        )

    def similar_args(self) -> tuple[str, list[str]]:
        """The run's GeoPackage and the arguments of `urbangeo similar` for the selection."""
        gpkg, ids = self.selected_regions()
        args = ["similar", "--gpkg", gpkg]
        for rid in ids:
            args += ["--region", rid]
        return gpkg, args

    def find_similar(self) -> None:
        """Run `urbangeo similar` on the selected regions and load its layer."""
        try:
            gpkg, args = self.similar_args()
        except ValueError as exc:
            self.fail(str(exc))
            return
        self._start([("Similar regions", args)], gpkg=gpkg, load=load_similar_layer)

    def cancel(self) -> None:
        """Cancel the running command (it stops cleanly; finished layers stay)."""
        self._queue.clear()
        if self.task is not None:
            self.append_log("Canceling…")
            self.task.cancel()

    # ---- running ----------------------------------------------------------------------------

    def _guarded(self, make):
        try:
            return make()
        except ValueError as exc:
            return exc

    def _start(
        self,
        steps: list[tuple[str, list[str] | Exception]],
        *,
        gpkg: str | None = None,
        load=None,
    ) -> None:
        """Run ``steps`` in turn, then ``load`` the GeoPackage's layers (default: the panel's
        run folder and all its layers; ``gpkg``: an existing run's)."""
        for _, args in steps:
            if isinstance(args, Exception):
                self.fail(str(args))
                return
        if gpkg is None:
            out = self.run_dir()
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self.fail(
                    f"Cannot create the run folder {out}: {exc.strerror}. Choose another one."
                )
                return
            if not os.access(out, os.W_OK):
                self.fail(f"The run folder {out} is not writable. Choose another one.")
                return
        try:
            self._exe = find_executable(self.executable.filePath() or None)
        except CommandNotFound as exc:
            self.fail(str(exc))
            return
        if gpkg is None:
            QgsSettings().setValue("urbangeo/out_dir", self.out_dir.filePath())
        self._gpkg = gpkg or self.gpkg()
        self._load = load or load_run_layers
        self._queue = list(steps)
        self._next()

    def _next(self) -> None:
        if not self._queue:
            self._set_running(False)
            return
        title, args = self._queue.pop(0)
        self.append_log(f"$ urbangeo {' '.join(args)}")
        self.task = CommandTask(f"urbangeo: {title}", self._exe, args)
        self.task.streamed.connect(self._on_event)
        self.task.done.connect(self._on_done)
        self._set_running(True)
        self.progress.setValue(0)
        QgsApplication.taskManager().addTask(self.task)

    def _on_event(self, event) -> None:
        if event.fraction is not None:
            self.progress.setValue(int(100 * event.fraction))
            self.progress.setFormat(f"{event.data.get('task', '')} %p%")
        elif event.kind in ("message", "log") and event.data.get("text"):
            self.append_log(event.data["text"])

    def _on_done(self, outcome) -> None:
        self.task = None
        if outcome.ok:
            if self._gpkg and Path(self._gpkg).exists():
                self._load(self._gpkg)
            if self._queue:
                self._next()
                return
            self.append_log("Done.")
            self.progress.setValue(100)
        else:
            self._queue.clear()
            self.fail(outcome.message())
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.run_button.setEnabled(not running)
        self.similar_button.setEnabled(not running)
        for button in self.stage_buttons.values():
            button.setEnabled(not running)

    def append_log(self, text: str) -> None:
        """Add a line to the panel's log."""
        self.log.appendPlainText(text)

    def fail(self, text: str) -> None:
        """Show an error in the log and the message bar."""
        self.append_log(f"Error: {text}")
        bar = getattr(self.iface, "messageBar", None)
        if bar is not None:
            # the message bar is a convenience; the log has the whole message
            with contextlib.suppress(Exception):
                bar().pushCritical("urbangeo", text.splitlines()[0])


def load_similar_layer(gpkg: str) -> QgsVectorLayer | None:
    """Add the run's ``similar`` layer to the project (replacing one loaded from the same
    GeoPackage), in the run's group when it is loaded, on top otherwise."""
    project = QgsProject.instance()
    source = f"{gpkg}|layername={SIMILAR_LAYER}"
    old = [
        layer.id()
        for layer in project.mapLayers().values()
        if layer.name() == SIMILAR_LAYER and layer.source().split("|")[0] == gpkg
    ]
    project.removeMapLayers(old)
    layer = QgsVectorLayer(source, SIMILAR_LAYER, "ogr")
    if not layer.isValid():
        return None
    root = project.layerTreeRoot()
    group = root.findGroup(f"urbangeo: {Path(gpkg).parent.name or Path(gpkg).stem}")
    project.addMapLayer(layer, False)
    (group or root).insertLayer(0, layer)
    return layer


def _spin(value: float, low: float, high: float, suffix: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setDecimals(0)
    box.setValue(value)
    box.setSuffix(suffix)
    return box
