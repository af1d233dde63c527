#!/usr/bin/env bash
# The one command that shows the module working: the bundled sample video through the default model, locally (no
# Azure), one JSON record per analysed frame on stdout. Arguments go to `visionedge run` (e.g. --model yolox-nano,
# --source rtsp://..., --fps 2); it stops after 20 s unless you give your own --duration.
set -euo pipefail
# shellcheck source=scripts/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

setup_venv
fetch_assets squeezenet

args=("$@")
duration_given=false
for arg in "$@"; do
    [[ "$arg" == --duration || "$arg" == --duration=* ]] && duration_given=true
done
$duration_given || args+=(--duration 20)

unset IOTEDGE_MODULEID  # local mode even inside an IoT Edge shell
cd "$ROOT"
step "visionedge run ${args[*]}"
exec visionedge run "${args[@]}"
