"""The urbangeo Processing provider: one algorithm per stage.

Algorithms work from the Processing toolbox, the graphical modeler and
``processing.run("urbangeo:grid", {...})``. Each runs the urbangeo command of the user's own
environment (Processing already runs algorithms off the main thread) and streams its progress.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsProcessingProvider,
    QgsProject,
    QgsSettings,
    QgsVectorFileWriter,
)
from qgis.PyQt.QtGui import QIcon

from .command import SETTINGS_KEY, CommandNotFound, find_executable, stream_command
from .stages import STAGES, Stage, build_args

ICON = Path(__file__).with_name("icon.svg")


def export_layer(layer, *, selected_only: bool = False) -> str:
    """Write a vector layer to a temporary GeoPackage (its own CRS) and return the path."""
    if selected_only and layer.selectedFeatureCount() == 0:
        raise QgsProcessingException(
            f"No features are selected in layer '{layer.name()}'. Select the boundary polygons "
            "or untick 'selected features only'."
        )
    path = str(Path(tempfile.mkdtemp(prefix="urbangeo-")) / "boundary.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.onlySelectedFeatures = selected_only
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, path, QgsProject.instance().transformContext(), options
    )
    if error != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"Cannot export layer '{layer.name()}': {message}")
    return path


def extent_to_bbox(extent, crs) -> str:
    """A QgsRectangle in ``crs`` as ``"W,S,E,N"`` in WGS84."""
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    if crs.isValid() and crs != wgs84:
        transform = QgsCoordinateTransform(crs, wgs84, QgsProject.instance())
        extent = transform.transformBoundingBox(extent)
    return ",".join(
        f"{v:.6f}"
        for v in (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    )


class StageAlgorithm(QgsProcessingAlgorithm):
    """A Processing algorithm that runs one urbangeo stage."""

    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.stage = stage

    def createInstance(self):
        return StageAlgorithm(self.stage)

    def name(self) -> str:
        return self.stage.name

    def displayName(self) -> str:
        return self.stage.title

    def group(self) -> str:
        return "Pipeline stages"

    def groupId(self) -> str:
        return "stages"

    def shortHelpString(self) -> str:
        return (
            f"{self.stage.help}\n\nRuns `urbangeo {self.stage.name}` from your urbangeo "
            "environment; set its path in the urbangeo panel's settings if it is not on PATH."
        )

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def initAlgorithm(self, config=None) -> None:
        for p in self.stage.params:
            opt = p.optional
            if p.kind == "number":
                param = QgsProcessingParameterNumber(
                    p.name, p.label, QgsProcessingParameterNumber.Double, p.default, opt, 0.0
                )
            elif p.kind == "int":
                param = QgsProcessingParameterNumber(
                    p.name, p.label, QgsProcessingParameterNumber.Integer, p.default, opt
                )
            elif p.kind == "enum":
                default = p.options.index(p.default) if p.default in p.options else 0
                param = QgsProcessingParameterEnum(p.name, p.label, list(p.options), False, default)
            elif p.kind == "bool":
                param = QgsProcessingParameterBoolean(p.name, p.label, bool(p.default), opt)
            elif p.kind == "file":
                param = QgsProcessingParameterFile(
                    p.name, p.label, QgsProcessingParameterFile.File, "", None, opt
                )
            elif p.kind == "output":
                param = QgsProcessingParameterFileDestination(
                    p.name, p.label, "GeoPackage (*.gpkg)", None, opt
                )
            elif p.kind == "vector":
                param = QgsProcessingParameterVectorLayer(
                    p.name, p.label, [QgsProcessing.TypeVectorPolygon], None, opt
                )
            elif p.kind == "extent":
                param = QgsProcessingParameterExtent(p.name, p.label, None, opt)
            else:
                param = QgsProcessingParameterString(p.name, p.label, p.default, False, opt)
            self.addParameter(param)
        self.addOutput(QgsProcessingOutputFile("GPKG", "Run GeoPackage"))
        for layer in self.stage.layers:
            self.addOutput(QgsProcessingOutputVectorLayer(layer.upper(), layer))

    def processAlgorithm(self, parameters, context, feedback):
        values = self._plain_values(parameters, context)
        try:
            executable = find_executable(QgsSettings().value(SETTINGS_KEY, "") or None)
            args = build_args(self.stage, values)
        except (CommandNotFound, ValueError) as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushCommandInfo(" ".join([Path(executable).name, *args]))

        def on_event(event) -> None:
            if event.fraction is not None:
                feedback.setProgress(100.0 * event.fraction)
            elif event.kind in ("message", "log") and event.data.get("text"):
                if event.data.get("level") == "warning":
                    feedback.pushWarning(event.data["text"])
                else:
                    feedback.pushInfo(event.data["text"])

        outcome = stream_command(
            executable, args, on_event=on_event, is_canceled=feedback.isCanceled
        )
        if not outcome.ok:
            raise QgsProcessingException(outcome.message())
        gpkg = values["GPKG"]
        results = {"GPKG": gpkg}
        for layer in self.stage.layers:
            results[layer.upper()] = f"{gpkg}|layername={layer}"
        return results

    def _plain_values(self, parameters, context) -> dict:
        values = {}
        for p in self.stage.params:
            if p.optional and parameters.get(p.name) in (None, ""):
                values[p.name] = None  # parameterAs* would turn "unset" into 0 or ""
                continue
            if p.kind == "number":
                value = self.parameterAsDouble(parameters, p.name, context)
            elif p.kind == "int":
                value = self.parameterAsInt(parameters, p.name, context)
            elif p.kind == "enum":
                value = p.options[self.parameterAsEnum(parameters, p.name, context)]
            elif p.kind == "bool":
                value = self.parameterAsBool(parameters, p.name, context)
            elif p.kind == "output":
                value = self.parameterAsFileOutput(parameters, p.name, context)
            elif p.kind == "file":
                value = self.parameterAsFile(parameters, p.name, context)
            elif p.kind == "vector":
                layer = self.parameterAsVectorLayer(parameters, p.name, context)
                value = export_layer(layer) if layer is not None else None
            elif p.kind == "extent":
                if parameters.get(p.name) in (None, ""):
                    value = None
                else:
                    extent = self.parameterAsExtent(parameters, p.name, context)
                    crs = self.parameterAsExtentCrs(parameters, p.name, context)
                    value = None if extent.isNull() else extent_to_bbox(extent, crs)
            else:
                value = self.parameterAsString(parameters, p.name, context)
            values[p.name] = value
        return values


class UrbangeoProvider(QgsProcessingProvider):
    """Processing provider ``urbangeo``."""

    def id(self) -> str:
        return "urbangeo"

    def name(self) -> str:
        return "urbangeo"

    def longName(self) -> str:
        return "urbangeo: urban region profiling"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:
        for stage in STAGES.values():
            self.addAlgorithm(StageAlgorithm(stage))
