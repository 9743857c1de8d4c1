"""The plugin object QGIS loads: a toolbar button for the dock and the Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

ICON = Path(__file__).with_name("icon.svg")


class UrbangeoPlugin:
    """urbangeo's QGIS plugin."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider = None
        self.action = None
        self.dock = None

    def initProcessing(self) -> None:
        """Register the Processing provider (also called by QGIS without a GUI)."""
        from .provider import UrbangeoProvider

        self.provider = UrbangeoProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Add the toolbar button and menu entry; the dock is built when first shown."""
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), "urbangeo panel", self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.toggled.connect(self.show_dock)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu("&urbangeo", self.action)

    def show_dock(self, visible: bool = True):
        """Show (creating it on first use) or hide the dock panel; returns it."""
        if self.dock is None:
            from .dock import UrbangeoDock

            self.dock = UrbangeoDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.setVisible(visible)
        return self.dock

    def unload(self) -> None:
        """Remove everything the plugin added."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        if self.action is not None:
            self.iface.removePluginMenu("&urbangeo", self.action)
            self.iface.removeToolBarIcon(self.action)
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
