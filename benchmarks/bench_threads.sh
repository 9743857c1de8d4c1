#!/usr/bin/env bash
# The default run's train stage under a second busy process (one core spinning), with urbangeo's
# own thread choice against OMP_NUM_THREADS=1 and against torch's default of one thread per core
# (OMP_NUM_THREADS=<cores>, what urbangeo did before choosing): issue #14.
#   bash benchmarks/bench_threads.sh RUN_DIR [EPOCHS] [ROUNDS]
# RUN_DIR: a folder made by `urbangeo run` (its run.gpkg, images and captions are reused).
set -euo pipefail
run_dir=${1:?give a run folder made by urbangeo run}
epochs=${2:-10}
rounds=${3:-2}
exe=${URBANGEO:-.venv/bin/urbangeo}
cores=$(nproc)
python3 -c "while True: pass" &
busy=$!
trap 'kill $busy' EXIT
printf "%-28s %8s\n" setting seconds
for round in $(seq "$rounds"); do
    for setting in default one all; do
        case $setting in
            default) env_args=(env -u OMP_NUM_THREADS) ;;
            one) env_args=(env OMP_NUM_THREADS=1) ;;
            all) env_args=(env OMP_NUM_THREADS="$cores") ;;
        esac
        start=$(date +%s.%N)
        "${env_args[@]}" "$exe" train --gpkg "$run_dir/run.gpkg" --profile offline-demo \
            --epochs "$epochs" --name "bench-$setting" --overwrite -q
        end=$(date +%s.%N)
        printf "%-28s %8.1f\n" "$setting (round $round)" "$(echo "$end - $start" | bc)"
    done
done
