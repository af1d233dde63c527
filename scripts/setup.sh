# shellcheck shell=bash
# Shared set-up steps for scripts/test.sh and scripts/demo.sh; source it, then call the functions.
#   setup_venv                  .venv in the repo root, dev requirements + editable package (only when they change)
#   need_system_command CMD PKG apt-get install PKG when CMD is missing (sudo only when not root)
#   fetch_assets NAME...        models NAME... and the media into the module cache, mirror first, sha256-verified
# Every step prints one line on stderr ("==> ..."), so stdout stays free for the module's records.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.visionedge-requirements.sha256"

step() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* with your package manager"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$@" >/dev/null
}

need_system_command() {
    local command="$1" package="$2"
    # Debian keeps mosquitto in /usr/sbin, which is not on a normal user's PATH.
    if command -v "$command" >/dev/null 2>&1 || [[ -x "/usr/sbin/$command" ]]; then
        return 0
    fi
    step "apt-get install $package ($command not found)"
    apt_install "$package"
}

requirements_hash() {
    cat "$ROOT/requirements-dev.txt" "$ROOT/modules/visionedge/requirements.txt" \
        "$ROOT/modules/visionedge/pyproject.toml" "$ROOT/modules/devhub/pyproject.toml" | sha256sum | cut -d' ' -f1
}

setup_venv() {
    local python="${PYTHON:-python3}"
    if [[ ! -x "$VENV/bin/python" || ! -x "$VENV/bin/pip" ]]; then
        step "create $VENV ($("$python" --version 2>&1))"
        if ! "$python" -m venv --clear "$VENV" >/dev/null 2>&1; then
            step "apt-get install python3-venv (python3 -m venv failed)"
            apt_install python3-venv
            "$python" -m venv --clear "$VENV"
        fi
    fi
    local wanted
    wanted="$(requirements_hash)"
    if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$wanted" ]]; then
        step "pip install -e modules/visionedge -r requirements-dev.txt (requirements changed)"
        (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -e "$ROOT/modules/visionedge" -r "$ROOT/requirements-dev.txt")
        printf '%s\n' "$wanted" >"$STAMP"
    else
        step "requirements up to date in $VENV"
    fi
    export VIRTUAL_ENV="$VENV"
    export PATH="$VENV/bin:$PATH"
}

fetch_assets() {
    local mirrors
    mirrors="$("$VENV/bin/python" -c 'import os
from visionedge.models.fetch import mirrors_from_env
print(os.pathsep.join(str(p) for p in mirrors_from_env()) or "none found: downloading")')"
    step "fetch models $* and media (mirror: $mirrors)"
    "$VENV/bin/visionedge" --log-level WARNING models fetch "$@" --media >/dev/null \
        || die "could not fetch the models and media (see above); set VISIONEDGE_MIRROR to the folders holding them"
}
