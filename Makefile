# Two commands set everything up on a fresh machine with Python 3.11+ and Node 20.3+:
#   make demo   run the portal on embedded defaults (PostgreSQL, Redis under var/)
#   make test   run every test against real PostgreSQL and Redis
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
# The machine's PostgreSQL and Redis when they answer, else the embedded ones (see portal/localservices.py).
LOCAL_SERVICES = $(shell $(PY) -m portal.localservices 2>/dev/null)
# mypy (its Django plugin), makemigrations and check load the settings but encrypt nothing: a throwaway key satisfies
# them (portal/settings/secrets.py stops any other process that has no PORTAL_SECRET_KEYS).
CHECK_KEY = PORTAL_SECRET_KEYS=$(shell $(PY) -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")

.PHONY: help install demo test test-lane-plugin test-lane-python test-python test-checks test-plugin lint bench soak schemathesis clean console-assets browser

help:
	@echo "make demo   - run the portal locally (web, worker, beat) on embedded defaults"
	@echo "make test   - every test, lint and architecture check"
	@echo "make test-plugin - the Backstage plugin: npm ci, tsc, node tests (incl. the e2e with the real portal and the README install in a real backend)"
	@echo "make test-python - ruff, import-linter, mypy, migrations check, pytest (make test runs it beside test-plugin)"
	@echo "make lint   - ruff, mypy, import-linter, Django checks"
	@echo "make bench  - benchmarks (tests/bench), printing their figures"
	@echo "make soak   - the full fault soak: 200 deployments over 20 teams under faults and killed workers (make test runs a short one)"
	@echo "make console-assets - the console's Chart.js asset (npm ci + copy into static/; make demo and make test run it)"
	@echo "make browser - Debian's chromium for the console's browser tests (apt-get as root; skipped otherwise)"
	@echo "make schemathesis - the full fuzz of the running API from its OpenAPI schema (make test runs a smoke)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

# The portal's C extensions (portal/usage/_otlp_scan.c, _cloudevents_scan.c and _native.c), compiled by the image's
# own step for the venv's Python; again when a source, the step or the venv changes. The stamp holds nothing: only
# its time counts.
EXTENSIONS := $(VENV)/.extensions-built
$(EXTENSIONS): $(VENV)/.synced portal/usage/_interning.h portal/usage/_otlp_scan.c portal/usage/_cloudevents_scan.c \
		portal/usage/_native.c k8s/image/steps.sh
	k8s/image/steps.sh extensions $(CURDIR)
	@touch $@

install: $(VENV)/.synced $(EXTENSIONS)

demo: install console-assets
	$(PY) manage.py demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	env $(LOCAL_SERVICES) $(CHECK_KEY) $(VENV)/bin/mypy
	env $(LOCAL_SERVICES) $(CHECK_KEY) $(PY) manage.py check
	env $(LOCAL_SERVICES) $(CHECK_KEY) $(PY) manage.py makemigrations --check --dry-run

# Two lanes side by side (the plugin's; the Python checks then pytest): they share nothing (the plugin's e2e portal
# has a database and a Redis database of its own), so on two cores make test takes about as long as the longer one.
# --output-sync prints each lane's output whole when it ends, not interleaved; either lane failing fails make test.
# Not a third lane for tests/e2e: its waits have fixed timeouts, and one ran out when it shared two cores with both
# (in test-python's second pytest, after the soak, it failed in each of four runs on a loaded machine; alone it passed).
test: install
	@echo "make test: the plugin and the Python checks run side by side; each prints its output when it ends"
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-lane-plugin test-lane-python

# The two lanes, balanced by measurement (a clean clone on 2 cores): the plugin lane (npm ci, tsc, node tests) was
# about three minutes shorter than pytest, so the one-minute test of `manage.py demo` on embedded services (its own
# PostgreSQL, Redis and processes under var/, no test database) runs there, after the plugin. Every test still runs.
DEMO_TEST := tests/test_demo.py

test-lane-plugin: test-plugin
	env $(LOCAL_SERVICES) $(VENV)/bin/pytest $(DEMO_TEST)

test-lane-python:
	@$(MAKE) --no-print-directory test-python LANE_PYTEST_ARGS="--ignore=$(DEMO_TEST)"

# The checks, then the soak and the e2e (tests/soak: mostly waiting, for a killed worker's message to come back after
# the broker's visibility timeout; tests/e2e: about 75% waiting on the demo's own processes), run in a second pytest beside the rest of pytest, so that they overlap the rest's work instead
# of coming before it (on a clean clone the checks took about a minute, mypy's cold cache most of it, and the soak with
# its set-up about another). That pytest has a database and a Redis database of its own (tests/lanes.py). One pytest
# runs everything after the checks, as before, when PYTEST_ARGS chooses the tests, or with embedded services (no
# machine PostgreSQL or Redis: two pytests would share them). The checks' and the second pytest's output is printed
# whole after the rest's; any failing fails the target.
# tests/test_schemathesis.py (about 46 s of CPU, the API fuzzed from its schema) runs there too, one test at a time
# with the soak and the e2e: that pytest finished minutes before the main one, the long pole of make test.
# The gateway's fuzz (about 20 s of CPU) and the image rehearsal (uv and three C compiles, about 20 s) run there too:
# measured on a clean clone of this 2-core machine, the main pytest (392-466 s) was the long pole by 70-140 s.
WAITING_TESTS := tests/test_schemathesis.py tests/portal/gateway/test_fuzz.py tests/k8s/test_image.py tests/soak tests/e2e
WAITING_LOG := var/test-waiting.log
WAITING_SERVICES = $(if $(strip $(PYTEST_ARGS)),,$(shell $(PY) -m tests.lanes $(LOCAL_SERVICES)))

test-python: install console-assets browser
	@waiting_services="$(WAITING_SERVICES)"; \
	if [ -n "$$waiting_services" ]; then \
		mkdir -p $(dir $(WAITING_LOG)); \
		echo "The checks, then pytest $(WAITING_TESTS) ($$waiting_services), run beside the rest; output in $(WAITING_LOG)"; \
		( $(MAKE) --no-print-directory test-checks; checked=$$?; \
		  env $(LOCAL_SERVICES) $$waiting_services $(VENV)/bin/pytest $(WAITING_TESTS); tested=$$?; \
		  [ $$checked -eq 0 ] && [ $$tested -eq 0 ] ) >$(WAITING_LOG) 2>&1 & waiting=$$!; \
		env $(LOCAL_SERVICES) $(VENV)/bin/pytest $(LANE_PYTEST_ARGS) $(addprefix --ignore=,$(WAITING_TESTS)); rest=$$?; \
		wait $$waiting; waited=$$?; \
		echo "---- the checks, then pytest $(WAITING_TESTS), run beside the rest (exit status $$waited):"; \
		cat $(WAITING_LOG); \
		[ $$rest -eq 0 ] && [ $$waited -eq 0 ]; \
	else \
		$(MAKE) --no-print-directory test-checks && env $(LOCAL_SERVICES) $(VENV)/bin/pytest $(LANE_PYTEST_ARGS) $(PYTEST_ARGS); \
	fi

# mypy's Django plugin imports the settings: without the services' URLs they would start the embedded ones.
test-checks:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	env $(LOCAL_SERVICES) $(CHECK_KEY) $(VENV)/bin/mypy
	env $(LOCAL_SERVICES) $(CHECK_KEY) $(PY) manage.py makemigrations --check --dry-run

# The Backstage plugin: dependencies from the committed lock (again only when it changes), type check, tests.
PLUGIN := backstage-plugin

# The plugin is an npm workspace: its root and one package per Backstage module (plugins/*).
$(PLUGIN)/node_modules/.package-lock.json: $(PLUGIN)/package.json $(PLUGIN)/package-lock.json $(wildcard $(PLUGIN)/plugins/*/package.json)
	$(PLUGIN)/scripts/npm-ci.sh

test-plugin: install $(PLUGIN)/node_modules/.package-lock.json
	cd $(PLUGIN) && npx tsc -p .
	cd $(PLUGIN) && env $(LOCAL_SERVICES) npm test --silent

# After an API change: the portal's OpenAPI document into the plugin, and the client types generated from it (a
# Python test and a plugin test fail while either is stale).
plugin-openapi: install $(PLUGIN)/node_modules/.package-lock.json
	env $(LOCAL_SERVICES) $(CHECK_KEY) $(PY) manage.py spectacular --format openapi-json --validate --fail-on-warn --file $(PLUGIN)/plugins/genai-portal-node/openapi.json
	cd $(PLUGIN) && npm run generate --silent

# The console's browser asset: Chart.js from the npm registry (pinned by the console's package-lock.json), copied
# into the portal's static files; rebuilt only when the lock changes. Pages work without it (tables, no charts).
CONSOLE_ASSETS := portal/console/assets
CONSOLE_CHART := portal/console/static/console/vendor/chart.umd.min.js

$(CONSOLE_CHART): $(CONSOLE_ASSETS)/package.json $(CONSOLE_ASSETS)/package-lock.json $(CONSOLE_ASSETS)/build.mjs
	cd $(CONSOLE_ASSETS) && npm ci --no-audit --no-fund --silent && npm run build --silent

console-assets: $(CONSOLE_CHART)

# The console's browser tests drive Debian's chromium (no browser download): installed here when we are root and it
# is missing; otherwise left alone, and the browser tests skip saying why.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the console's browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
			|| echo "chromium could not be installed: the console's browser tests will skip"; \
	else echo "no chromium and not root: the console's browser tests will skip"; fi

bench: install console-assets
	env $(LOCAL_SERVICES) $(VENV)/bin/pytest tests/bench -s --no-header -q -o addopts="" -p no:cacheprovider

# The fault soak at full scale (tests/soak; make test runs its short variant): real Celery workers on the broker,
# the sandbox injecting faults, workers killed; prints time to converge, requests and messages per deployment.
soak: install
	env PORTAL_SOAK=full $(LOCAL_SERVICES) $(VENV)/bin/pytest tests/soak -s --no-header -q -p no:randomly

schemathesis: install
	env PORTAL_FUZZ_EXAMPLES=100 PORTAL_GATEWAY_FUZZ_EXAMPLES=15 PORTAL_FUZZ_PHASES=examples,coverage,fuzzing $(LOCAL_SERVICES) \
		$(VENV)/bin/pytest tests/test_schemathesis.py tests/portal/gateway/test_fuzz.py -s

clean:
	-env $(CHECK_KEY) $(PY) manage.py embedded stop
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
