#!/usr/bin/env bash
# A screenshot of a run's offline map with headless Chromium (the picture in the README):
#   bash scripts/screenshot-map.sh RUN_DIR [OUT.png]      (default OUT: docs/map.png)
set -euo pipefail
run_dir=${1:?give the run folder, e.g. sao-paulo}
out=${2:-docs/map.png}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless=new --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --user-data-dir="$profile" --hide-scrollbars \
    --window-size=1000,700 --virtual-time-budget=5000 \
    --screenshot="$(realpath -m "$out")" "file://$(realpath "$run_dir")/maps/map.html" 2>/dev/null
echo "Wrote $out"
