#!/usr/bin/env bash
# Install, upgrade, roll back or remove edge-agent on a gateway.
#
#   sudo ./install.sh                      install (online: from this source tree / PyPI deps)
#   sudo ./install.sh --offline BUNDLE     install from a bundle made by build-bundle.sh
#   sudo ./install.sh --upgrade [--offline BUNDLE]
#   sudo ./install.sh --rollback           back to the previous version
#   sudo ./install.sh --uninstall [--purge]
#
# Layout (see README.md): every version gets its own venv under
# /opt/edge-agent/releases/VERSION; `current` points at the running one,
# `previous` at the one before, and `venv` -> `current` is the fixed path the
# unit starts. Switching versions is one atomic rename of a symlink, so a
# power cut mid-upgrade leaves either the old or the new version, never half.
#
# --root DIR installs into DIR instead of / (tests, image building): no user
# is created, nothing is chowned and systemctl is not called. Venvs hold
# absolute paths, so a tree staged with --root runs only at that path.
set -euo pipefail

readonly UNIT_NAME=edge-agent.service
readonly DIST=m2m-edge-agent
readonly SERVICE_USER=edge-agent
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE

ROOT=/
PYTHON=python3
ACTION=install
OFFLINE=""
SOURCE=""
PURGE=0
FORCE=0
SKIP_CHECK=0
NO_START=0
KEEP=3
UNIT_CHANGED=0

say() { printf 'edge-agent install: %s\n' "$*"; }
die() { printf 'edge-agent install: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --offline DIR   install from the wheelhouse bundle DIR (no network needed)
  --from PATH     install from a source tree or a wheel (default: this tree)
  --python PY     the Python to build venvs with (default: python3, >= 3.11)
  --root DIR      install below DIR, without touching users or systemd
  --keep N        versions to keep under releases/ (default 3, minimum 2)
  --force         reinstall the same version / switch even if `check` fails
  --skip-check    do not validate the existing site.yaml with the new version
  --no-start      do not enable or restart the service
  --purge         with --uninstall: also delete config, state and the user
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --offline) OFFLINE=${2:?--offline needs a directory}; shift ;;
        --from) SOURCE=${2:?--from needs a path}; shift ;;
        --python) PYTHON=${2:?--python needs an interpreter}; shift ;;
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --keep) KEEP=${2:?--keep needs a number}; shift ;;
        --upgrade) ACTION=upgrade ;;
        --rollback) ACTION=rollback ;;
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=1 ;;
        --force) FORCE=1 ;;
        --skip-check) SKIP_CHECK=1 ;;
        --no-start) NO_START=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done

case "$KEEP" in ''|*[!0-9]*) die "--keep needs a number" ;; esac
[ "$KEEP" -ge 2 ] || die "--keep must be at least 2 (current and previous)"
[ "$PURGE" = 0 ] || [ "$ACTION" = uninstall ] || die "--purge only goes with --uninstall"

ROOT=$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)
if [ "$ROOT" = / ]; then
    ROOT=""
    LIVE=1   # the real system: users, ownership and systemd are ours to manage
    [ "$(id -u)" = 0 ] || die "run as root (sudo), or use --root DIR for a staged install"
else
    LIVE=0
fi

readonly OPT="$ROOT/opt/edge-agent"
readonly RELEASES="$OPT/releases"
readonly ETC="$ROOT/etc/edge-agent"
readonly STATE="$ROOT/var/lib/edge-agent"
readonly UNIT_PATH="$ROOT/etc/systemd/system/$UNIT_NAME"
readonly MODULES_CONF="$ROOT/etc/modules-load.d/edge-agent.conf"

live() { [ "$LIVE" = 1 ]; }
skip() { say "skipped (staged install under $ROOT): $*"; }
have_systemd() { live && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# Atomically point symlink $1 at $2 (relative target): rename(2) replaces
# the old link in one step, unlike `ln -sfn`, which unlinks first.
point() {
    local tmp
    tmp="$1.new.$$"
    ln -sfn "$2" "$tmp"
    mv -Tf "$tmp" "$1"
}

current_version() {
    local target
    target=$(readlink "$OPT/current" 2>/dev/null) || return 1
    basename "$target"
}

previous_version() {
    local target
    target=$(readlink "$OPT/previous" 2>/dev/null) || return 1
    basename "$target"
}

# --- where the package comes from, and which version it is -----------------

wheel_version() {  # m2m_edge_agent-1.2.3-py3-none-any.whl -> 1.2.3
    local name
    name=$(basename "$1")
    name=${name#m2m_edge_agent-}
    printf '%s\n' "${name%%-*}"
}

find_wheelhouse() {  # a bundle has its wheels in wheels/; accept a bare dir too
    if [ -d "$1/wheels" ]; then printf '%s\n' "$1/wheels"; else printf '%s\n' "$1"; fi
}

resolve_source() {
    if [ -z "$OFFLINE" ] && [ -z "$SOURCE" ]; then
        if [ -d "$HERE/wheels" ]; then
            OFFLINE=$HERE              # this script runs from inside a bundle
        elif [ -f "$HERE/../pyproject.toml" ]; then
            SOURCE=$(cd "$HERE/.." && pwd)
        else
            die "no package source: use --offline BUNDLE or --from PATH"
        fi
    fi
    if [ -n "$OFFLINE" ]; then
        [ -d "$OFFLINE" ] || die "--offline $OFFLINE: no such directory"
        OFFLINE=$(cd "$OFFLINE" && pwd)
        WHEELHOUSE=$(find_wheelhouse "$OFFLINE")
        local newest
        newest=$(find "$WHEELHOUSE" -maxdepth 1 -name 'm2m_edge_agent-*.whl' -printf '%f\n' \
            | sort -V | tail -n 1)
        [ -n "$newest" ] || die "no m2m_edge_agent wheel in $WHEELHOUSE"
        VERSION=$(wheel_version "$newest")
        REQUIREMENT="$DIST==$VERSION"
        check_bundle_target
    elif [ -f "$SOURCE" ]; then
        case "$SOURCE" in *.whl) ;; *) die "--from $SOURCE is not a wheel" ;; esac
        VERSION=$(wheel_version "$SOURCE")
        REQUIREMENT=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
    elif [ -f "$SOURCE/pyproject.toml" ]; then
        SOURCE=$(cd "$SOURCE" && pwd)
        VERSION=$(sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$SOURCE/agent/__init__.py")
        [ -n "$VERSION" ] || die "cannot read __version__ from $SOURCE/agent/__init__.py"
        REQUIREMENT=$SOURCE
    else
        die "--from $SOURCE: not a wheel or a source tree"
    fi
    case "$VERSION" in ''|*/*|.*) die "odd version '$VERSION'" ;; esac
}

# A bundle built for another Python or CPU fails deep inside pip; say it plainly.
check_bundle_target() {
    local manifest="$OFFLINE/bundle.env" want_py want_arch have_py have_arch
    [ -f "$manifest" ] || return 0
    want_py=$(sed -n 's/^PYTHON_VERSION=//p' "$manifest")
    want_arch=$(sed -n 's/^ARCHES=//p' "$manifest")
    have_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    have_arch=$(uname -m)
    if [ -n "$want_py" ] && [ "$want_py" != "$have_py" ]; then
        die "bundle is for Python $want_py, $PYTHON is $have_py (rebuild with --python-version $have_py)"
    fi
    case " $want_arch " in
        *" $have_arch "*|"  ") ;;
        *) die "bundle is for $want_arch, this machine is $have_arch" ;;
    esac
}

check_python() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install python3 python3-venv)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is older than 3.11"
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
        || die "$PYTHON cannot make venvs (apt-get install python3-venv)"
}

# --- system pieces: user, directories, unit ---------------------------------

ensure_user() {
    if ! live; then skip "create user $SERVICE_USER"; return; fi
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/edge-agent --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-agent gateway" "$SERVICE_USER"
        say "created system user $SERVICE_USER"
    fi
    # Serial ports belong to dialout (Debian, Raspberry Pi OS); some USB CDC
    # devices to plugdev on newer releases. Only groups that exist.
    local group
    for group in dialout plugdev; do
        if getent group "$group" >/dev/null; then usermod -a -G "$group" "$SERVICE_USER"; fi
    done
}

ensure_dirs() {
    install -d -m 0755 "$OPT" "$RELEASES"
    install -d -m 0755 "$ETC"
    install -d -m 0750 "$STATE"
    if live; then
        chown "$SERVICE_USER:$SERVICE_USER" "$STATE"
    fi
    # /etc/edge-agent is root's; the agent reads site.yaml (0644) and key
    # files the technician makes 0640 root:edge-agent.
    # The example is always refreshed; site.yaml is the technician's and is
    # never touched once it exists.
    if [ -f "$HERE/site.yaml.example" ]; then
        install -m 0644 "$HERE/site.yaml.example" "$ETC/site.yaml.example"
    fi
    if [ ! -e "$ETC/environment" ]; then
        install -m 0600 /dev/null "$ETC/environment"
        # shellcheck disable=SC2016  # ${env:NAME} is literal text here
        printf '# Secrets for ${env:NAME} references in site.yaml, e.g.\n# MQTT_PASSWORD=...\n' \
            > "$ETC/environment"
    fi
    if [ -f "$HERE/README.md" ]; then install -m 0644 "$HERE/README.md" "$OPT/README-deploy.md"; fi
    # A copy for --rollback and --uninstall when the bundle is long gone.
    if [ "$HERE" != "$OPT" ]; then install -m 0755 "${BASH_SOURCE[0]}" "$OPT/install.sh"; fi
}

# Remote config pushes (config.apply) rewrite site.yaml, but the hardened
# unit sees /etc read-only (ProtectSystem=strict). So the file lives in the
# state directory, which the agent may write, and /etc/edge-agent/site.yaml
# is a relative symlink to it: technicians still edit it where they expect.
# A regular file found there (a first install, or a technician who replaced
# the link) is moved into place; it is the config the agent runs.
ensure_site_link() {
    local link="$ETC/site.yaml" target="$STATE/site.yaml"
    if [ -f "$link" ] && [ ! -L "$link" ]; then
        if [ -f "$target" ]; then mv -f "$target" "$target.bak"; fi
        mv "$link" "$target"
        say "moved $link to $target (remote config pushes write it there)"
    fi
    if [ ! -L "$link" ]; then
        ln -s ../../var/lib/edge-agent/site.yaml "$link"
    fi
    if [ -f "$target" ]; then
        chmod 0640 "$target"
        if live; then chown "$SERVICE_USER:$SERVICE_USER" "$target"; fi
    fi
}

ensure_unit() {
    install -d -m 0755 "$(dirname "$UNIT_PATH")" "$(dirname "$MODULES_CONF")"
    if ! cmp -s "$HERE/$UNIT_NAME" "$UNIT_PATH"; then
        UNIT_CHANGED=1
        install -m 0644 "$HERE/$UNIT_NAME" "$UNIT_PATH"
    fi
    # USB serial drivers loaded at boot, so DeviceAllow=char-ttyUSB/ttyACM
    # resolve when the agent starts even if the adapter is plugged in later.
    printf '# edge-agent: serial device classes must exist before it starts\nusbserial\ncdc_acm\n' \
        > "$MODULES_CONF"
    if have_systemd; then systemctl daemon-reload; else skip "systemctl daemon-reload"; fi
}

# --- releases ---------------------------------------------------------------

build_release() {
    local dir="$RELEASES/$VERSION" pip_args installed
    if [ -f "$dir/.complete" ] && [ "$FORCE" = 0 ]; then
        say "version $VERSION already built in $dir"
        return
    fi
    # A directory without the marker is a half-built venv (power cut): redo.
    rm -rf "$dir"
    say "building $dir"
    "$PYTHON" -m venv "$dir"
    pip_args=(--disable-pip-version-check --no-input --quiet)
    if [ -n "$OFFLINE" ]; then
        pip_args+=(--no-index --find-links "$WHEELHOUSE")
    fi
    "$dir/bin/python" -I -m pip install "${pip_args[@]}" "$REQUIREMENT" \
        || { rm -rf "$dir"; die "pip could not install $REQUIREMENT"; }
    installed=$("$dir/bin/python" -I -c \
        'import importlib.metadata as m; print(m.version("m2m-edge-agent"))')
    if [ "$installed" != "$VERSION" ]; then
        rm -rf "$dir"
        die "expected $DIST $VERSION, pip installed $installed"
    fi
    [ -x "$dir/bin/edge-agent" ] || { rm -rf "$dir"; die "no edge-agent command in $dir"; }
    touch "$dir/.complete"
}

# Validate the technician's site.yaml with the version about to run it.
check_config() {
    local dir="$RELEASES/$1"
    [ -f "$ETC/site.yaml" ] || return 0
    [ "$SKIP_CHECK" = 0 ] || return 0
    # Same environment the unit gets, so ${env:..} secrets resolve.
    # shellcheck disable=SC1091  # the technician's file, not ours to follow
    if ( set -a; . "$ETC/environment"; exec "$dir/bin/edge-agent" check -c "$ETC/site.yaml" ); then
        return 0
    fi
    [ "$FORCE" = 1 ] && { say "site.yaml rejected by $1; switching anyway (--force)"; return 0; }
    die "version $1 rejects $ETC/site.yaml (above); fix it, or --force"
}

switch_to() {  # make $1 current; the old current becomes previous
    local old
    old=$(current_version || true)
    if [ -n "$old" ] && [ "$old" != "$1" ]; then point "$OPT/previous" "releases/$old"; fi
    point "$OPT/current" "releases/$1"
    [ -L "$OPT/venv" ] || point "$OPT/venv" current
    say "current version: $1${old:+ (previous: $old)}"
}

prune_releases() {
    local keep_cur keep_prev name count=0
    keep_cur=$(current_version || true)
    keep_prev=$(previous_version || true)
    # current and previous always stay; the newest others fill up to KEEP.
    [ -z "$keep_cur" ] || count=$((count + 1))
    [ -z "$keep_prev" ] || count=$((count + 1))
    while IFS= read -r name; do
        if [ "$name" = "$keep_cur" ] || [ "$name" = "$keep_prev" ]; then continue; fi
        if [ "$count" -lt "$KEEP" ] && [ -f "$RELEASES/$name/.complete" ]; then
            count=$((count + 1)); continue
        fi
        say "removing old release $name"
        rm -rf "${RELEASES:?}/$name"
    done < <(find "$RELEASES" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -rV)
}

# Start (or restart) the service; a version that does not come up is rolled
# back at once, so an upgrade never leaves a gateway without an agent.
# Arguments: the version to go back to if this one fails and its previous;
# or "unchanged" (a re-run: start if stopped, restart only for a new unit).
restart_service() {
    if [ "$NO_START" = 1 ]; then say "not starting the service (--no-start)"; return; fi
    if ! have_systemd; then skip "systemctl enable/restart $UNIT_NAME"; return; fi
    systemctl enable "$UNIT_NAME" >/dev/null
    if [ ! -f "$ETC/site.yaml" ]; then
        say "write $ETC/site.yaml (see site.yaml.example), then: systemctl start edge-agent"
        return
    fi
    # A re-run that changed nothing leaves a running agent alone.
    local verb=restart
    if [ "${1:-}" = unchanged ]; then
        shift
        [ "$UNIT_CHANGED" = 1 ] || verb=start
    fi
    # Type=notify: this returns once the agent sent READY=1, or fails.
    if systemctl "$verb" "$UNIT_NAME"; then
        say "service running: journalctl -u edge-agent -f"
        return
    fi
    local back=${1:-} back_prev=${2:-} failed
    failed=$(current_version || true)
    if [ -n "$back" ] && [ "$back" != "$failed" ] && [ -f "$RELEASES/$back/.complete" ]; then
        say "$UNIT_NAME failed to start with $failed; rolling back to $back"
        # Restore both links as they were, so a later --rollback does not
        # land on the version that just failed.
        point "$OPT/current" "releases/$back"
        if [ -n "$back_prev" ] && [ -d "$RELEASES/$back_prev" ]; then
            point "$OPT/previous" "releases/$back_prev"
        fi
        systemctl restart "$UNIT_NAME" || true
    fi
    die "$UNIT_NAME did not start${failed:+ with $failed}: journalctl -u edge-agent -n 50"
}

# --- actions ----------------------------------------------------------------

do_install() {
    check_python
    resolve_source
    local cur
    cur=$(current_version || true)
    if [ "$ACTION" = install ] && [ -n "$cur" ] && [ "$cur" != "$VERSION" ]; then
        die "edge-agent $cur is installed; use --upgrade to move to $VERSION"
    fi
    if [ "$ACTION" = upgrade ] && [ -z "$cur" ]; then
        die "nothing installed to upgrade; run without --upgrade"
    fi
    ensure_user
    ensure_dirs
    ensure_site_link
    ensure_unit
    if [ "$cur" = "$VERSION" ] && [ "$FORCE" = 0 ] && [ -f "$RELEASES/$VERSION/.complete" ]; then
        say "edge-agent $VERSION is already installed"
        [ -L "$OPT/venv" ] || point "$OPT/venv" current
        restart_service unchanged
        return
    fi
    build_release
    check_config "$VERSION"
    local prev
    prev=$(previous_version || true)
    switch_to "$VERSION"
    restart_service "$cur" "$prev"
    # Only once the new version runs: a failed start restores the old links.
    prune_releases
}

do_rollback() {
    local prev
    prev=$(previous_version || true)
    [ -n "$prev" ] || die "no previous version to roll back to"
    [ -f "$RELEASES/$prev/.complete" ] || die "previous version $prev is missing or incomplete"
    check_config "$prev"
    switch_to "$prev"
    restart_service
}

do_uninstall() {
    if have_systemd; then
        systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
    else
        skip "systemctl disable --now $UNIT_NAME"
    fi
    rm -f "$UNIT_PATH" "$MODULES_CONF"
    if have_systemd; then systemctl daemon-reload; fi
    rm -rf "$OPT"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ETC" "$STATE"
        if live && getent passwd "$SERVICE_USER" >/dev/null; then userdel "$SERVICE_USER"; fi
        say "removed edge-agent with its configuration, data and user"
    else
        say "removed edge-agent; kept $ETC and $STATE (--purge deletes them)"
    fi
}

install -d -m 0755 "$OPT"
# One installer at a time (a technician's second terminal, a fleet tool).
exec 9>"$OPT/.install.lock"
flock -n 9 || die "another install.sh is running"

case "$ACTION" in
    install|upgrade) do_install ;;
    rollback) do_rollback ;;
    uninstall) do_uninstall ;;
esac
