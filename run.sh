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
        # Debian packages some tests need, installed once as root with apt (best effort: without
        # them those tests skip): redis-tools ships a redis-server built with TLS (as
        # redis-check-rdb; it installs no service) for the external-Redis tests, openssl makes
        # certificates, logrotate checks the sample, chromium and its driver run the
        # dashboard's browser test.
        need=()
        [ -x /usr/bin/redis-check-rdb ] || need+=(redis-tools)
        command -v openssl >/dev/null || need+=(openssl)
        command -v logrotate >/dev/null || need+=(logrotate)
        command -v chromium >/dev/null || need+=(chromium)
        command -v chromedriver >/dev/null || need+=(chromium-driver)
        if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "run.sh: installing Debian's ${need[*]} for the tests" >&2
            apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                                "${need[@]}" >/dev/null 2>&1; }
            apt_install || { apt-get update -qq >/dev/null 2>&1 && apt_install; } \
                || echo "run.sh: could not install them; the tests that need them will be skipped" >&2
        fi
        exec "$VENV/bin/python" -m pytest "$@" ;;
    bench)
        shift
        exec "$VENV/bin/python" -m bench "$@" ;;
    *)
        exec "$VENV/bin/cameron" "$@" ;;
esac
