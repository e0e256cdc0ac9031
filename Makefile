# `make run` and `make test` each do the whole setup on a fresh machine.
# The stamp files make the second run fast: setup repeats only when the
# dependency lists change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HTMX := webapp/static/vendor/htmx.min.js

.PHONY: run test setup browser tools redis nginx clean bench prepare translations

# The production server (gunicorn, webapp/gunicorn_conf.py) on PRIVASCAN_BIND
# (default 127.0.0.1:5000). No bytecode caches written next to the code
# (gunicorn_conf.py covers the app too).
run: setup
	PYTHONDONTWRITEBYTECODE=1 $(VENV)/bin/privascan serve

test: setup browser tools redis nginx
	$(PY) -m pytest -q

bench: setup
	$(PY) -m bench.pipeline

# Deploy time: fill the embedding cache (PRIVASCAN_CACHE_DIR) so the first start needs no text tower.
prepare: setup
	$(VENV)/bin/privascan prepare

# Extract the interface's strings (babel.cfg) and merge them into every catalogue
# (webapp/translations/*/LC_MESSAGES/messages.po); then translate what is empty or fuzzy.
translations: setup
	$(PY) -m scripts.translations

setup: $(VENV)/.stamp $(HTMX)

# torch and torchvision are pinned here (not in pyproject) because these exact
# builds install from this machine's disk; other versions download gigabytes.
$(VENV)/.stamp: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -e '.[dev]'
	touch $@

# htmx comes from the npm registry, pinned by package-lock.json, and is served
# from our own static folder: the page never asks a CDN for anything.
$(HTMX): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	mkdir -p $(dir $(HTMX))
	cp node_modules/htmx.org/dist/htmx.min.js $(HTMX)

# The browser tests drive Debian's Chromium; Playwright never downloads one.
browser:
	@test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium chromium-driver)

# strace, for the proof that the real server writes nothing to disk
# (scripts/strace_disk_writes.py, run by tests/test_strace_disk_writes.py).
tools:
	@command -v strace >/dev/null || (apt-get update -q && apt-get install -y -q strace)

# Debian's redis-server, for the scale-out tests (tests/redis_server.py starts
# it on a free loopback port with persistence off; nothing runs as a service).
redis:
	@command -v redis-server >/dev/null || (apt-get update -q && apt-get install -y -q redis-server)

# Debian's nginx, for the tests that put the deploy recipe's proxy in front of
# the real server (scripts/nginx_front.py runs it on a free loopback port as
# the current user; nothing runs as a service).
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -q && apt-get install -y -q nginx)

clean:
	rm -rf $(VENV) node_modules webapp/static/vendor
