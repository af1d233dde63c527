#!/usr/bin/env bash
# The one command that runs the whole test suite, on a fresh Debian machine too:
#   .venv (created if missing; requirements installed only when they change), mosquitto and openssl (apt-get when
#   missing), models and media fetched from the workplace mirror (found upwards or via VISIONEDGE_MIRROR), then
#   ruff, mypy and pytest over tests/. Extra arguments go to pytest: scripts/test.sh -x -k golden; give paths to
#   run only those: scripts/test.sh tests/core
set -euo pipefail
# shellcheck source=scripts/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

setup_venv
need_system_command mosquitto mosquitto
need_system_command openssl openssl
need_system_command chromium chromium  # the offline report is opened in a real browser
fetch_assets squeezenet squeezenet-fp32 yolox-nano yolov3-tiny

cd "$ROOT"
step "ruff check ."
ruff check --quiet .
step "mypy"
mypy
targets=(tests)
for arg in "$@"; do  # a test path among the arguments replaces the default tests/
    if [[ "$arg" != -* && ( -e "${arg%%::*}" ) ]]; then
        targets=()
        break
    fi
done
step "pytest ${targets[*]:+${targets[*]} }$*"
exec pytest "${targets[@]}" "$@"
