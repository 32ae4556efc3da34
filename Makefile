# Every target installs what it needs first: a pinned uv in .tools/, then the locked
# dependencies in .venv/ (run, demo, serve and migrate: the service and the embedded servers
# only; every other target: the dev tools too). Only Python 3.11+ has to be on the machine.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# Byte-compiled at install, as pip and the Dockerfile do: uv does not by default, and where
# PYTHONDONTWRITEBYTECODE is set (this machine, CI) every process would compile FastAPI,
# pydantic and redis again: 0.6 s more to start each server and 7 MB more in each worker.
export UV_COMPILE_BYTECODE := 1

.DEFAULT_GOAL := help
.PHONY: help install runtime run demo serve migrate test lint format bench loadtest \
	loadtest-headless stack up down logs clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The service and the embedded servers, quietly: no dev tools (mypy, Playwright, Locust, ...).
# --inexact leaves the tools of a full install in place rather than removing them.
$(VENV)/.runtime: pyproject.toml uv.lock | $(UV)
	@echo "Installing the service and the embedded PostgreSQL and Redis into $(VENV)/ (locked)"
	@$(UV) sync --locked --inexact --quiet --no-default-groups --extra embedded --python $(PYTHON)
	@touch $@

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --all-extras --python $(PYTHON)
	@touch $@ $(VENV)/.runtime

install: $(VENV)/.installed ## create .venv from uv.lock, dev tools included

# The video players the content steering test runs in Chromium (hls.js), pinned by the lock.
PLAYERS := tests/player/node_modules/.package-lock.json
$(PLAYERS): tests/player/package.json tests/player/package-lock.json
	npm ci --prefix tests/player --no-audit --no-fund
	@touch $@

runtime: $(VENV)/.runtime

run: runtime ## serve on 127.0.0.1:8000 for people; embedded PostgreSQL and Redis under .data/ unless BALANCER_*_URL are set
	$(BIN)/python -m app run

demo: runtime ## make run, plus two stand-in CDN hosts on 127.0.0.1:8081 and :8082 for the examples
	$(BIN)/python -m loadtest.demo

serve: runtime ## serve against BALANCER_DATABASE_URL and BALANCER_REDIS_URL (after make migrate)
	$(BIN)/python -m app serve

migrate: runtime ## apply db/migrations to BALANCER_DATABASE_URL (or the compose stack's database)
	@if [ -n "$$BALANCER_DATABASE_URL" ]; then $(BIN)/python -m app migrate; \
	else docker compose run --rm migrate; fi

lint: install ## ruff, mypy, import contracts, hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# test: the tests that measure time or load the machine (marked `serial`, listed in
# tests/conftest.py) run after the others, alone; the others run on three pytest workers, a
# module per worker at a time (its servers are module fixtures), each worker with its own
# database and Redis keys: most of their time is spent waiting for servers, so three keep two
# cores busier than two did (parallel part 5:20 -> 4:32-4:39 in two local runs; one CI=true
# run hung at 95% in a fixture's teardown, cause still open). The soak and the fault runs
# (`slow`) are in the serial part.
test: lint $(PLAYERS) ## lint, then unit, integration and end-to-end tests on real PostgreSQL and Redis (about 12 minutes on 2 cores)
	@$(BIN)/pytest -m "not serial" -n 3 --dist loadscope; parallel=$$?; \
	$(BIN)/pytest -m serial; serial=$$?; \
	exit $$(( parallel || serial ))

bench: install ## redirect path vs a raw asyncio Protocol and a bare ASGI app, side by side, wrk if installed (about 7 minutes)
	$(BIN)/python -m loadtest.bench

# The UI listens on 127.0.0.1 only (LOCUST_WEB_HOST to change it): anyone who reaches it can
# start a swarm. Admin users only with LOADTEST_ADMIN_TOKEN; BALANCER_ADMIN_TOKEN never reaches Locust.
loadtest: install ## Locust web UI on 127.0.0.1:8089 against BALANCER_URL (default http://127.0.0.1:8000)
	env -u BALANCER_ADMIN_TOKEN $(BIN)/locust -f loadtest/locustfile.py \
		--web-host $${LOCUST_WEB_HOST:-127.0.0.1} --host $${BALANCER_URL:-http://127.0.0.1:8000}

loadtest-headless: install ## fixed Locust scenario; CSV and HTML report in loadtest/results/
	$(BIN)/python -m loadtest.headless

stack: install ## two instances behind a local nginx (+ Prometheus if installed), without Docker
	$(BIN)/python -m loadtest.stack

up: ## docker compose: postgres, redis, migrate, 2 app replicas, nginx, locust, prometheus, grafana
	docker compose up -d --build

down: ## stop the compose stack
	docker compose down

logs: ## follow the compose stack's logs
	docker compose logs -f

clean: ## remove the virtual environments and local data
	rm -rf $(VENV) $(TOOLS) .data .mypy_cache .ruff_cache .pytest_cache
