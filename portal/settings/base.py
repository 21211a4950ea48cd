"""Base settings: what every deployment shares; each concern's values come from its own module."""

from __future__ import annotations

from portal.settings.env import BASE_DIR, ENV, VAR_DIR, ConfigurationError  # noqa: F401

DEBUG = ENV.boolean("PORTAL_DEBUG", default=False)
_secret_key = ENV.text("DJANGO_SECRET_KEY")
if _secret_key is None:
    if not DEBUG and ENV.boolean("PORTAL_REQUIRE_SECRET_KEY", default=False):
        raise ConfigurationError("DJANGO_SECRET_KEY must be set in production")
    _secret_key = "insecure-development-key-set-DJANGO_SECRET_KEY-in-production"
elif len(_secret_key) < 32:
    raise ConfigurationError("DJANGO_SECRET_KEY must be at least 32 characters")
SECRET_KEY = _secret_key

ALLOWED_HOSTS = ENV.text_list("PORTAL_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = ENV.text_list("PORTAL_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "portal.core",
    "portal.tenancy",
    "portal.api",
    "portal.tokens",
    "portal.clusters",
    "portal.deployments",
    "portal.gateway",
    "portal.usage",
    "catalog",
    "portal.console",
    "portal.ops",
]

MIDDLEWARE = [
    "portal.core.middleware.RequestMetricsMiddleware",
    "portal.core.middleware.RejectNullBytesMiddleware",
    "portal.core.middleware.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"
AUTH_USER_MODEL = "tenancy.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise expects it even before collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
DATA_UPLOAD_MAX_MEMORY_SIZE = ENV.integer("PORTAL_MAX_REQUEST_BYTES", 2_621_440, minimum=1024)

CSRF_FAILURE_VIEW = "portal.api.errors.csrf_failure_view"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = ENV.boolean("PORTAL_SECURE_COOKIES", default=False)
# Behind a TLS-terminating proxy: trust its X-Forwarded-Proto and -Host, so absolute links the API builds
# (pagination `next`, reveal links) name the address clients use, https included.
if ENV.boolean("PORTAL_BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# HTTP Strict Transport Security: 0 (off) unless the deployment serves only HTTPS (k8s/portal's overlay sets it).
SECURE_HSTS_SECONDS = ENV.integer("PORTAL_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = ENV.boolean("PORTAL_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = ENV.boolean("PORTAL_HSTS_PRELOAD", default=False)
SECURE_SSL_REDIRECT = ENV.boolean("PORTAL_SSL_REDIRECT", default=False)
SILENCED_SYSTEM_CHECKS: list[str] = []
if ENV.boolean("PORTAL_BEHIND_PROXY", default=False) and not SECURE_SSL_REDIRECT:
    # The TLS-terminating proxy redirects plain HTTP itself; in the cluster, kubelet probes and Prometheus reach
    # the pods over plain HTTP and must not be redirected (`manage.py check --deploy` would warn, security.W008).
    SILENCED_SYSTEM_CHECKS.append("security.W008")

from portal.settings.observability import *  # noqa: E402,F403
from portal.settings.observability import LOG_FORMAT  # noqa: E402

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "portal.core.logs.JsonFormatter"},
    },
    # Every line the portal writes goes through this handler, and it redacts secrets (portal/core/logs.py).
    "filters": {"redact_secrets": {"()": "portal.core.logs.RedactSecretsFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["redact_secrets"]}},
    "root": {"handlers": ["console"], "level": ENV.text("PORTAL_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}


from portal.settings.api import *  # noqa: E402,F403
from portal.settings.backstage import *  # noqa: E402,F403
from portal.settings.celery import *  # noqa: E402,F403
from portal.settings.gateway import *  # noqa: E402,F403
from portal.settings.secrets import SECRET_ENCRYPTION_KEYS  # noqa: E402,F401  (PORTAL_SECRET_KEYS, demo, tests)
from portal.settings.services import *  # noqa: E402,F403
from portal.settings.sizing import *  # noqa: E402,F403
from portal.settings.tenancy import *  # noqa: E402,F403
from portal.settings.usage import *  # noqa: E402,F403

PORTAL_PORT = ENV.integer("PORTAL_PORT", 8000, minimum=1, maximum=65535)
PORTAL_HOST = ENV.text("PORTAL_HOST", "127.0.0.1")
