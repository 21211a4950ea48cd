#!/usr/bin/env bash
# The image's build and start steps, one place for both: k8s/image/Dockerfile runs `compiler`, `install`,
# `extensions` and `collectstatic` while building, tests/k8s/test_image.py runs them in a clean temporary folder
# and then `check` with the production overlay's environment (the settings a pod starts with).
#
#   steps.sh compiler APP       a C compiler from Debian's packages when there is none (the build stage
#                               only: the slim image has Python's headers but no compiler)
#   steps.sh install APP        exactly uv.lock, without the dev group, into APP/.venv (wheels only)
#   steps.sh extensions APP     the portal's C extensions (portal/usage/_otlp_scan.c, _cloudevents_scan.c,
#                               _native.c) for APP/.venv's Python; `make install` builds them with this same step
#   steps.sh collectstatic APP  the static files into APP/var/static (served by WhiteNoise)
#   steps.sh check APP          what every pod does first: import the production settings, load the
#                               web app and the Celery tasks, and pass `manage.py check --deploy` with
#                               warnings counted as failures
set -euo pipefail

usage="usage: steps.sh compiler|install|extensions|collectstatic|check APP_DIR"
step=${1:?$usage}
app=$(cd "${2:?$usage}" && pwd)
cd "$app"
python="$app/.venv/bin/python"

case "$step" in
compiler)
    # gcc and the C library's headers only (no build-essential: make, g++ and dpkg-dev are not needed); nothing
    # to do where a compiler is found, as on a developer's machine or in tests/k8s/test_image.py's rehearsal.
    if ! command -v "${CC:-cc}" >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
        rm -rf /var/lib/apt/lists/*
    fi
    ;;
install)
    # --frozen: the lock as it is, never re-resolved; --no-build: a dependency without a wheel fails here
    # instead of needing a compiler; the project itself is not a package (tool.uv.package = false).
    UV_PROJECT_ENVIRONMENT="$app/.venv" "${UV:-uv}" sync --frozen --no-dev --no-build --no-install-project
    ;;
extensions)
    # Compiled as setuptools would compile them (position-independent, against the interpreter's own headers,
    # named with its EXT_SUFFIX so that another interpreter never loads them), then imported once to prove it.
    include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    for name in _otlp_scan _cloudevents_scan _native; do
        "${CC:-cc}" -O2 -shared -fPIC -Wall -Wextra -I"$include" \
            -o "portal/usage/$name$suffix" "portal/usage/$name.c"
        "$python" -c "import portal.usage.$name"
    done
    ;;
collectstatic)
    # Settings are imported without services: these addresses are never contacted while collecting. Nothing is
    # encrypted either: a throwaway key, never baked into the image, satisfies the settings' key check.
    build_key=$("$python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')
    env PORTAL_VAR_DIR="$app/var" PORTAL_EMBEDDED_SERVICES=false PORTAL_SECRET_KEYS="$build_key" \
        DATABASE_URL=postgres://build@database.invalid/build REDIS_URL=redis://redis.invalid:6379/0 \
        "$python" manage.py collectstatic --noinput --verbosity 0
    test -d "$app/var/static/admin" && test -d "$app/var/static/rest_framework"
    ;;
check)
    export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-portal.settings}"
    "$python" -c 'import django; django.setup(); import portal.wsgi; from portal.celery import app; app.loader.import_default_modules()'
    "$python" manage.py check --deploy --fail-level WARNING
    ;;
*)
    echo "steps.sh: unknown step $step" >&2
    exit 2
    ;;
esac
