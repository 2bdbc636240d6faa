#!/usr/bin/env bash
# One command for everything: `./run.sh` runs Cameron with the sample workflow,
# `./run.sh test [pytest args]` runs the test suite, `./run.sh bench [--smoke]` the benchmark
# suite (bench/). Sets up .venv on first use.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    echo "run.sh: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
# Reinstall only when the package's metadata changed since the last install.
stamp="$VENV/.cameron-installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "run.sh: installing Cameron and its dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi

cmd=${1:-run}
case "$cmd" in
    run)
        shift || true
        exec "$VENV/bin/cameron" run "$@" ;;
    test)
        shift
        # The dashboard's browser test drives Debian's headless chromium through its
        # chromedriver. Installed once, as root with apt; otherwise that test is skipped.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
                && { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; }; then
            echo "run.sh: installing Debian's chromium and chromium-driver for the dashboard test" >&2
            chromium_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                                     chromium chromium-driver >/dev/null 2>&1; }
            chromium_install || { apt-get update -qq >/dev/null 2>&1 && chromium_install; } \
                || echo "run.sh: could not install them; the dashboard test will be skipped" >&2
        fi
        exec "$VENV/bin/python" -m pytest "$@" ;;
    bench)
        shift
        exec "$VENV/bin/python" -m bench "$@" ;;
    *)
        exec "$VENV/bin/cameron" "$@" ;;
esac
