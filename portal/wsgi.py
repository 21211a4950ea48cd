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
# The youngest generation is collected every 700 allocations by default: a batch of 5,000 usage events allocates
# some 100,000 objects (records, their tuples, the rating's columns) that are all alive until the answer, so each
# young collection walks them for nothing; about 1 µs an event in all (measured: rating and staging a batch with
# the collector off, 8.3 against 9.3 µs an event). Collected every 50,000 allocations, the same garbage goes, later.
gc.set_threshold(50_000, 20, 10)
