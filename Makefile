# Clickmap developer commands. `make run`, `make test`, `make bench`, `make lint`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run stop test bench lint format chromium services-check clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

# Fresh clone to a running dashboard on the embedded default (PostgreSQL under var/,
# started by the first command that connects; inline tasks).
run: $(STAMP)
	@mkdir -p var
	DEBUG=1 $(PY) manage.py migrate --noinput
	DEBUG=1 $(PY) manage.py seed_demo
	@# No celery beat on the embedded default: this starts scheduled sends every 5 s.
	DEBUG=1 $(PY) manage.py start_due_sends --every 5 & beat=$$!; \
	trap 'kill $$beat 2>/dev/null' EXIT INT TERM; \
	DEBUG=1 $(PY) manage.py runserver 127.0.0.1:8000

# The embedded PostgreSQL keeps running for the next command until stopped (data stays).
stop: $(STAMP)
	DEBUG=1 $(PY) manage.py embedded_db stop

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads one).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium for the browser tests…"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# Real PostgreSQL (TEST_DATABASE_URL, else the embedded server under var/) and Redis
# (TEST_REDIS_URL); fails loudly without them.
test: $(STAMP) chromium
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP) chromium
	$(PY) bench/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	-test -x $(PY) && DEBUG=1 $(PY) manage.py embedded_db stop
	rm -rf $(VENV) var .pytest_cache .ruff_cache
