#!/usr/bin/env bash
# Developer entry point; works on a fresh Debian / Raspberry Pi OS machine.
#   ./dev.sh demo [demo options]   simulated devices + the agent, live view
#   ./dev.sh test [pytest options] the test suite against real peers
#   ./dev.sh lint                  ruff + mypy
# It creates .venv and installs the project (again only when pyproject.toml
# changed), and installs Mosquitto, socat and Chromium for the tests when missing.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

apt_install() {
    echo "dev.sh: installing $* with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        "$PYTHON" -m venv .venv 2>/dev/null || { apt_install python3-venv; rm -rf .venv; "$PYTHON" -m venv .venv; }
    fi
    local stamp=.venv/.installed-$1
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --upgrade pip >/dev/null
        .venv/bin/python -m pip install -q -e ".[$1]"
        touch "$stamp"
    fi
}

ensure_test_tools() {
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
    command -v socat >/dev/null || apt_install socat
    # The status page is tested in a real (headless) browser.
    command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || apt_install chromium
    # Broker failover and MQTT 3.1.1 are tested against private NATS servers.
    command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || apt_install nats-server
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)
        ensure_venv test
        exec .venv/bin/edge-agent demo "$@"
        ;;
    test)
        ensure_venv test
        ensure_test_tools
        exec .venv/bin/python -m pytest "$@"
        ;;
    lint)
        ensure_venv test
        .venv/bin/ruff check agent drivers tests
        exec .venv/bin/mypy
        ;;
    *)
        echo "usage: ./dev.sh demo|test|lint [options]" >&2
        exit 2
        ;;
esac
