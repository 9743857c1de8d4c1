"""urbangeo's QGIS plugin: a dock panel and Processing algorithms that run the urbangeo command.

The plugin never imports urbangeo or torch: it runs the ``urbangeo`` command of the user's own
Python environment in the background and loads the layers it writes.
"""


def classFactory(iface):
    """Called by QGIS to load the plugin."""
    from .plugin import UrbangeoPlugin

    return UrbangeoPlugin(iface)
