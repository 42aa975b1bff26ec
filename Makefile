# RadPath: two commands on a fresh machine.
#   make run   - create .venv, install, migrate, load the demo clinic, start the task worker, serve on 127.0.0.1:8000
#   make test  - install (with the browser for end-to-end tests) and run the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install browser r-reference run migrate demo worker test bench bench-quick clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

# Debian's Chromium drives the end-to-end tests (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

# R and its survival package produce the reference values recorded in tests/outcomes_stats (the tests do not
# need R; this is for regenerating or extending the references).
r-reference:
	@command -v Rscript >/dev/null 2>&1 && Rscript -e 'library(survival)' >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq r-base-core r-cran-survival >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq r-base-core r-cran-survival >/dev/null; fi; }

migrate: install
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py seed_demo

run: demo
	@echo "Starting the background task worker and the web server on http://$(HOST):$(PORT)/"
	@$(BIN)/python manage.py db_worker --queue-name default >var/worker.log 2>&1 & WORKER=$$!; \
	trap 'kill $$WORKER 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

worker: install
	$(BIN)/python manage.py db_worker --queue-name default

# The suite on every core (pytest-xdist; each worker has its own test database). PYTEST_WORKERS=0 runs it serially.
# Whole modules go to a worker in file order (--dist loadscope, not reordered): the API contract test, the longest
# by far, starts first on one worker and nothing waits queued behind it while the other worker runs the rest.
PYTEST_WORKERS ?= auto
PYTEST_DIST ?= --dist loadscope --no-loadscope-reorder
test: install browser
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_DIST) $(PYTEST_ARGS)

bench-quick: install
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

bench: install
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
