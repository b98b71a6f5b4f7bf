#!/usr/bin/env bash
# Set up and run patchwatch from a clone, on Debian 12 or newer with nothing else installed.
#
#   scripts/dev.sh run [serve options]   install into .venv and start the server
#                                        (SQLite in ./data, http://127.0.0.1:8740)
#   scripts/dev.sh test [pytest args]    install what the tests need (Debian packages
#                                        and .venv) and run lint, import layers, types, tests
#   scripts/dev.sh setup                 only create/refresh .venv with the test extras
#
# Debian packages are installed with apt-get (through sudo when not root) only when a
# command the tests need is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PATCHWATCH_VENV:-.venv}"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    # $@: Debian packages; installs the ones not installed yet
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f '${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "dev.sh: installing Debian packages: ${missing[*]}" >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

python_ok() {
    python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

setup_venv() {
    # $1: pip extra ("" or "test")
    python_ok || apt_install python3 python3-venv python3-pip
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
    fi
    local spec="."
    [ -n "$1" ] && spec=".[$1]"
    local stamp="$VENV/.installed-$1"
    if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
        "$VENV/bin/pip" install -q -e "$spec"
        touch "$stamp"
    fi
}

test_system_packages() {
    # real tools the tests compare against or start on loopback
    # (makepkg ships pacman's vercmp; Debian's pacman-package-manager does not, but has
    # pacman and pacman-conf, the oracles of the Arch updates and repositories;
    # libarchive-tools has the bsdtar that makepkg and repo-add run; gpg signs the
    # test pacman databases gpgv checks, openssl the test APKINDEX files; chromium and
    # its driver run the web console's browser tests, which never download a browser)
    apt_install dpkg rpm createrepo-c dnf zypper gpgv xz-utils zstd curl systemd \
        postgresql prometheus prometheus-alertmanager prometheus-node-exporter docker-compose makepkg \
        libarchive-tools pacman-package-manager gpg openssl chromium chromium-driver
    command -v npm >/dev/null || apt_install npm
}

AXE_CORE_VERSION=4.11.1
AXE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/patchwatch-test/axe-core"

install_axe_core() {
    # axe-core, the accessibility rules the console's browser tests inject into each
    # page, from npm into a cache folder outside the repository (tests/test_console_browser.py
    # reads it from there, or from $PATCHWATCH_AXE_JS)
    local have
    have=$(node -p "require('$AXE_DIR/node_modules/axe-core/package.json').version" 2>/dev/null || true)
    [ "$have" = "$AXE_CORE_VERSION" ] && return 0
    mkdir -p "$AXE_DIR"
    npm install --silent --no-audit --no-fund --prefix "$AXE_DIR" "axe-core@$AXE_CORE_VERSION" >/dev/null
}

unpack_dnf_plugins() {
    # dnf's versionlock plugin, which the agent's tests run dnf with: Debian's
    # dnf-plugins-core Breaks zypper, so it is unpacked into the venv, not installed
    local dest="$VENV/share/dnf-plugins-core"
    [ -f "$dest/usr/lib/python3/dist-packages/dnf-plugins/versionlock.py" ] && return 0
    local tmp
    tmp="$(mktemp -d)"
    if (cd "$tmp" && apt-get download -q dnf-plugins-core >/dev/null 2>&1) ||
        { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
          (cd "$tmp" && apt-get download -q dnf-plugins-core >/dev/null 2>&1); }; then
        mkdir -p "$dest" && dpkg-deb -x "$tmp"/dnf-plugins-core_*.deb "$dest"
    else
        echo "dev.sh: could not download dnf-plugins-core (apt-get download)" >&2
    fi
    rm -rf "$tmp"
}

floor_tests() {
    # the exporter's tests once on the oldest prometheus-client that setup.cfg allows
    # (the exporter uses names that first appear in it), installed apart from .venv
    local floor dir
    floor=$(sed -n 's/^ *prometheus-client>=\([0-9.]*\)$/\1/p' setup.cfg)
    dir="$VENV/floor/prometheus-client-$floor"
    [ -d "$dir" ] || "$VENV/bin/pip" install -q --no-deps --target "$dir" "prometheus-client==$floor"
    PYTHONPATH="$dir" "$VENV/bin/python" -c 'import importlib.metadata as m, sys
v = m.version("prometheus-client")
sys.exit(None if v == sys.argv[1] else f"prometheus-client {v} is not the floor {sys.argv[1]}")' "$floor"
    PYTHONPATH="$dir" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
        tests/test_exporter.py tests/test_host_tags.py tests/test_monitoring_docs.py
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    run)
        setup_venv ""
        exec "$VENV/bin/patchwatch" serve "$@"
        ;;
    setup)
        test_system_packages
        setup_venv test
        unpack_dnf_plugins
        install_axe_core
        ;;
    test)
        test_system_packages
        setup_venv test
        unpack_dnf_plugins
        install_axe_core
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/lint-imports"
        "$VENV/bin/mypy"   # the packages and settings are in setup.cfg's [mypy]
        export PATCHWATCH_TEST_REQUIRE_POSTGRES=1 PATCHWATCH_TEST_REQUIRE_ORACLES=1
        [ $# -gt 0 ] || floor_tests   # a whole run only, not a chosen test
        exec "$VENV/bin/python" -m pytest -q "$@"
        ;;
    *)
        sed -n '2,12p' "$0" >&2
        exit 2
        ;;
esac
