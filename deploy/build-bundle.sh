#!/usr/bin/env bash
# Build an offline install bundle: every wheel edge-agent needs, for the
# gateway's Python and CPU, plus install.sh, the unit and the docs. Run it on
# a machine with internet access; carry the .tar.gz to the plant on a stick;
# there: tar xzf ...; sudo ./edge-agent-*/install.sh (it finds wheels/ itself).
#
#   deploy/build-bundle.sh                          Python 3.11, x86_64 + aarch64
#   deploy/build-bundle.sh --arch aarch64 --python-version 3.11 --out dist/
#
# Wheels are downloaded for the target (pip --platform/--python-version with
# --only-binary=:all:), never built for the host by accident. A dependency
# with no wheel for a target is built here from its sdist when it is pure
# Python (a py3-none-any wheel runs anywhere); a compiled one is reported,
# and the build fails unless --allow-missing. Each architecture is then
# proved complete by resolving the agent offline from the bundle alone.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE

PYTHON=python3
PY_VERSION=3.11
ARCHES=()
GLIBC=2.36          # Debian 12 / Raspberry Pi OS bookworm
OUT=dist
SOURCE=""
ALLOW_MISSING=0
PIP_EXTRA=()        # --find-links / --index-url for a plant's own mirror

say() { printf 'build-bundle: %s\n' "$*"; }
die() { printf 'build-bundle: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --arch A            x86_64, aarch64 or armv7l; repeat for several (default x86_64 aarch64)
  --python-version V  the gateway's Python, major.minor (default 3.11)
  --glibc V           the gateway's glibc (default 2.36: Debian 12 / Pi OS bookworm)
  --from PATH         source tree or ready wheel of edge-agent (default: this tree)
  --out DIR           where the bundle and its .tar.gz go (default dist/)
  --python PY         the Python that runs pip here (default python3)
  --find-links DIR    extra local wheels (repeatable); --index-url URL a mirror
  --no-index          use only --find-links (no PyPI)
  --allow-missing     write the bundle even if some architecture lacks wheels
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCHES+=("${2:?--arch needs a value}"); shift ;;
        --python-version) PY_VERSION=${2:?}; shift ;;
        --glibc) GLIBC=${2:?}; shift ;;
        --from) SOURCE=${2:?}; shift ;;
        --out) OUT=${2:?}; shift ;;
        --python) PYTHON=${2:?}; shift ;;
        --find-links) PIP_EXTRA+=(--find-links "$(cd "${2:?}" && pwd)"); shift ;;
        --index-url) PIP_EXTRA+=(--index-url "${2:?}"); shift ;;
        --no-index) PIP_EXTRA+=(--no-index) ;;
        --allow-missing) ALLOW_MISSING=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(x86_64 aarch64)
[[ "$PY_VERSION" =~ ^3\.[0-9]+$ ]] || die "--python-version wants major.minor, e.g. 3.11"
[[ "$GLIBC" =~ ^2\.[0-9]+$ ]] || die "--glibc wants 2.N, e.g. 2.36"
for arch in "${ARCHES[@]}"; do
    case "$arch" in x86_64|aarch64|armv7l) ;; *) die "unsupported --arch $arch" ;; esac
done
[ -n "$SOURCE" ] || SOURCE=$(cd "$HERE/.." && pwd)

pip() { "$PYTHON" -I -m pip --disable-pip-version-check --no-input "$@"; }

host_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$host_py" != "$PY_VERSION" ]; then
    # Dependency markers (python_version < ...) are evaluated with this Python.
    say "warning: resolving with Python $host_py for a $PY_VERSION target; pins may differ"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# --- 1. the agent's own wheel -------------------------------------------
mkdir -p "$WORK/agent"
if [ -f "$SOURCE" ]; then
    cp "$SOURCE" "$WORK/agent/"
else
    say "building the edge-agent wheel from $SOURCE"
    pip wheel --quiet --no-deps -w "$WORK/agent" "${PIP_EXTRA[@]}" "$SOURCE"
fi
AGENT_WHEEL=$(find "$WORK/agent" -name 'm2m_edge_agent-*.whl' | head -n 1)
[ -n "$AGENT_WHEEL" ] || die "no m2m_edge_agent wheel built from $SOURCE"
VERSION=$(basename "$AGENT_WHEEL" | cut -d- -f2)

NAME="edge-agent-$VERSION-py$PY_VERSION-$(IFS=-; echo "${ARCHES[*]}")"
BUNDLE="$OUT/$NAME"
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/wheels"
cp "$AGENT_WHEEL" "$BUNDLE/wheels/"

# --- 2. pin every dependency once, so all architectures get the same set -----
say "resolving dependencies of edge-agent $VERSION"
pip install --quiet --dry-run --ignore-installed --report "$WORK/report.json" \
    "${PIP_EXTRA[@]}" "$AGENT_WHEEL"
"$PYTHON" -I - "$WORK/report.json" > "$BUNDLE/requirements.txt" <<'EOF'
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    if meta["name"].lower().replace("_", "-") != "m2m-edge-agent":
        print(f'{meta["name"]}=={meta["version"]}')
EOF

# --- 3. wheels per architecture -------------------------------------------
platform_args() {  # newest glibc first: pip prefers earlier --platform tags
    local arch=$1 minor
    for ((minor = ${GLIBC#2.}; minor >= 17; minor--)); do
        printf -- '--platform\nmanylinux_2_%d_%s\n' "$minor" "$arch"
    done
    printf -- '--platform\nmanylinux2014_%s\n' "$arch"
}

target_args() {
    local arch=$1 nodot=${PY_VERSION/./}
    mapfile -t plat < <(platform_args "$arch")
    printf '%s\n' "${plat[@]}" --python-version "$PY_VERSION" --implementation cp \
        --abi "cp$nodot" --abi abi3 --abi none --only-binary=:all:
}

declare -A MISSING=()
for arch in "${ARCHES[@]}"; do
    mapfile -t target < <(target_args "$arch")
    say "downloading wheels for $arch (Python $PY_VERSION, glibc $GLIBC)"
    while IFS= read -r pin; do
        [ -n "$pin" ] || continue
        if pip download --quiet --no-deps -d "$BUNDLE/wheels" "${target[@]}" \
            --find-links "$BUNDLE/wheels" "${PIP_EXTRA[@]}" "$pin" 2>"$WORK/err"; then
            continue
        fi
        # No wheel for this target: pure Python builds here into a wheel
        # that runs anywhere; anything compiled cannot be made here.
        rm -rf "$WORK/built" && mkdir -p "$WORK/built"
        if pip wheel --quiet --no-deps -w "$WORK/built" "${PIP_EXTRA[@]}" "$pin" \
            2>>"$WORK/err" && compgen -G "$WORK/built/*-none-any.whl" >/dev/null; then
            say "  $pin: no wheel on the index; built a pure-Python wheel"
            cp "$WORK/built/"*-none-any.whl "$BUNDLE/wheels/"
        else
            say "  $pin: NO $arch WHEEL (compiled; would need gcc and headers on the gateway)"
            MISSING[$arch]="${MISSING[$arch]:-}${MISSING[$arch]:+ }$pin"
        fi
    done < "$BUNDLE/requirements.txt"

    # Prove it: resolve the agent for this target from the bundle alone.
    if [ -z "${MISSING[$arch]:-}" ]; then
        pip download --quiet --no-index --find-links "$BUNDLE/wheels" -d "$WORK/verify-$arch" \
            "${target[@]}" "m2m-edge-agent==$VERSION" \
            || die "bundle incomplete for $arch: offline resolution failed (above)"
    fi
done

# --- 4. the rest of the bundle --------------------------------------------
for f in install.sh edge-agent.service README.md site.yaml.example; do
    cp "$HERE/$f" "$BUNDLE/"
done
chmod 0755 "$BUNDLE/install.sh"
complete=()
for arch in "${ARCHES[@]}"; do
    [ -n "${MISSING[$arch]:-}" ] || complete+=("$arch")
done
{
    echo "VERSION=$VERSION"
    echo "PYTHON_VERSION=$PY_VERSION"
    echo "GLIBC=$GLIBC"
    # install.sh refuses an architecture not listed here.
    echo "ARCHES=${complete[*]:-}"
    echo "BUILT=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$BUNDLE/bundle.env"
{
    echo "# Dependencies without a wheel, by architecture (empty: none)"
    for arch in "${ARCHES[@]}"; do echo "$arch: ${MISSING[$arch]:-}"; done
} > "$BUNDLE/MISSING.txt"
(cd "$BUNDLE/wheels" && sha256sum -- *.whl > ../SHA256SUMS)

tar -C "$OUT" -czf "$OUT/$NAME.tar.gz" "$NAME"
say "bundle: $OUT/$NAME.tar.gz ($(du -h "$OUT/$NAME.tar.gz" | cut -f1), $(find "$BUNDLE/wheels" -name '*.whl' | wc -l) wheels)"
say "complete for: ${complete[*]:-nothing}"
if [ ${#complete[@]} -ne ${#ARCHES[@]} ]; then
    cat "$BUNDLE/MISSING.txt" >&2
    [ "$ALLOW_MISSING" = 1 ] || die "some architectures lack wheels (see MISSING.txt); --allow-missing to keep the bundle anyway"
fi
