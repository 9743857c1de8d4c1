#!/usr/bin/env bash
# Debian packages that the test suite drives for real: QGIS 3.22 (python3-qgis, qgis-providers)
# for the plugin and to check that urbangeo's GeoPackages open in QGIS, and Chromium to load
# the offline maps headless. Installs what is missing when it can
# (root or sudo, apt-get); otherwise says what to install. In CI (CI=true) missing packages are
# an error, since the tests that need them must run there.
set -euo pipefail

packages=(python3-qgis qgis-providers python3-venv chromium)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "Not a Debian-like system: install QGIS 3.22+ with its Python bindings yourself;" \
         "the QGIS tests are skipped until then." >&2
    [ "${CI:-}" = "true" ] && exit 1 || exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
else
    echo "Missing Debian packages: ${missing[*]}. Install them with:" >&2
    echo "  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    echo "The tests that need them are skipped until then." >&2
    [ "${CI:-}" = "true" ] && exit 1 || exit 0
fi
echo "Installing ${missing[*]} (apt-get)..." >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
