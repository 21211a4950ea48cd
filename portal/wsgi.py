"""WSGI entry point (gunicorn)."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

# What is loaded by now (Django, the apps, their modules) lives as long as the process: moved out of the collector's
# generations (docs.python.org/3/library/gc.html#gc.freeze), a full collection during a request walks the
# request's objects only. A usage batch allocates some 20 objects an event; with the startup heap in the oldest
# generation, the full collections it triggers cost about 6 µs an event (tests/bench/test_usage_ingest.py profile).
gc.collect()
gc.freeze()
