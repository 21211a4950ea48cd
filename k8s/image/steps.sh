#!/usr/bin/env bash
# The image's build and start steps, one place for both: k8s/image/Dockerfile runs `install` and
# `collectstatic` while building, tests/k8s/test_image.py runs them in a clean temporary folder and then
# `check` with the production overlay's environment (the settings a pod starts with).
#
#   steps.sh install APP        exactly uv.lock, without the dev group, into APP/.venv (wheels only)
#   steps.sh collectstatic APP  the static files into APP/var/static (served by WhiteNoise)
#   steps.sh check APP          what every pod does first: import the production settings, load the
#                               web app and the Celery tasks, and pass `manage.py check --deploy` with
#                               warnings counted as failures
set -euo pipefail

step=${1:?usage: steps.sh install|collectstatic|check APP_DIR}
app=$(cd "${2:?usage: steps.sh install|collectstatic|check APP_DIR}" && pwd)
cd "$app"
python="$app/.venv/bin/python"

case "$step" in
install)
    # --frozen: the lock as it is, never re-resolved; --no-build: a dependency without a wheel fails here
    # instead of needing a compiler; the project itself is not a package (tool.uv.package = false).
    UV_PROJECT_ENVIRONMENT="$app/.venv" "${UV:-uv}" sync --frozen --no-dev --no-build --no-install-project
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
