"""``urbangeo qgis-plugin``: build and install the QGIS plugin."""

from __future__ import annotations

from pathlib import Path

import click

from urbangeo.qgisplugin import build_plugin_zip, default_profile_dir, install_plugin
from urbangeo_cli._common import stage_command
from urbangeo_cli._options import FOLDER


@click.group("qgis-plugin")
def qgis_plugin() -> None:
    """Build or install the urbangeo QGIS plugin (QGIS 3.22 or newer).

    \b
    The plugin adds an urbangeo panel and Processing algorithms to QGIS. It runs the
    urbangeo command of this environment in the background (no PyTorch inside QGIS) and
    loads the layers it writes.
    """


@qgis_plugin.command()
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=FOLDER,
    default=Path("dist"),
    show_default=True,
    help="Folder for the zip.",
)
@stage_command
def build(out_dir: Path) -> None:
    """Write the plugin as a zip for QGIS's Plugins ▸ Install from ZIP.

    \b
    Example:
      urbangeo qgis-plugin build -o dist
    """
    click.echo(build_plugin_zip(out_dir))


@qgis_plugin.command()
@click.option(
    "--profile",
    type=FOLDER,
    help=f"QGIS profile folder. Default: {default_profile_dir()}",
)
@click.option(
    "--executable",
    help="The urbangeo command the plugin runs. Default: this environment's.",
)
@stage_command
def install(profile: Path | None, executable: str | None) -> None:
    """Install the plugin into a QGIS profile and tell it where this urbangeo is.

    \b
    Then restart QGIS and enable "urbangeo" in Plugins ▸ Manage and Install Plugins.
    Example:
      urbangeo qgis-plugin install
      urbangeo qgis-plugin install --profile ~/.local/share/QGIS/QGIS3/profiles/work
    """
    target = install_plugin(profile, executable=executable)
    click.echo(f"Installed the urbangeo QGIS plugin in {target}")
