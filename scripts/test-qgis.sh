#!/usr/bin/env bash
# Runs the QGIS plugin's tests inside a real QGIS: Debian's python3-qgis under QGIS's own Python
# (a venv with the system site-packages and pytest-qgis), driving this checkout's urbangeo
# command (.venv/bin/urbangeo), as a user's QGIS would. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

QGIS_PYTHON=${QGIS_PYTHON:-/usr/bin/python3}
QGIS_VENV=${QGIS_VENV:-.venv-qgis}

if ! "$QGIS_PYTHON" -c "import qgis.core" >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then
        echo "QGIS's Python bindings are missing in CI (scripts/install-system-deps.sh installs them)." >&2
        exit 1
    fi
    echo "Skipping the QGIS plugin tests: $QGIS_PYTHON cannot import qgis.core" \
         "(apt-get install python3-qgis qgis-providers)." >&2
    exit 0
fi
if [ ! -x "$QGIS_VENV/bin/pytest" ]; then
    "$QGIS_PYTHON" -m venv --system-site-packages "$QGIS_VENV"
    "$QGIS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "pytest>=8,<10" "pytest-qgis==5.0.2"
fi
export QT_QPA_PLATFORM=offscreen
export URBANGEO_EXECUTABLE=${URBANGEO_EXECUTABLE:-$PWD/.venv/bin/urbangeo}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
# Keep the QGIS settings these tests write out of the user's own profile.
export HOME=${URBANGEO_QGIS_TEST_HOME:-$(mktemp -d)}
exec "$QGIS_VENV/bin/python" -m pytest tests/qgis_plugin --confcutdir tests/qgis_plugin \
    -p no:cacheprovider "$@"
