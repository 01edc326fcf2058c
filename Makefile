# The README's two commands are `make run` and `make test`; the other targets are their steps.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock | cksum | cut -d' ' -f1)
SEED_USERS ?= 10000
TEST_ADMIN_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379/13
export TEST_ADMIN_DATABASE_URL TEST_REDIS_URL

.PHONY: install test-deps browser screenshot check-services setup run test test-faults client-jobs client-wheel bench bench-producers bench-flow bench-adaptive bench-growth bench-profile bench-paired bench-cost lint typecheck pytest format lock clean

$(STAMP): requirements-dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## the venv with the pinned packages

check-services: install  ## PostgreSQL and Redis answer (a clear message says how to start them)
	@$(BIN)/python -m worker check > /dev/null

setup: check-services  ## database, schema and demo users (only if the table is empty)
	$(BIN)/python -m worker setup --seed $(SEED_USERS)

run: setup  ## the worker, in the foreground
	@echo ""
	@echo "Worker starting. In another shell, enqueue a job and wait for its result:"
	@echo "    $(BIN)/python -m worker enqueue get_user user_id=42 --wait 10"
	@echo ""
	$(BIN)/arq worker.Settings

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

client-jobs: install  ## regenerate pgpool_client/jobs.py (the slim client's job methods) from jobs/registry.py
	$(BIN)/python -m worker.ops.client_codegen

client-wheel: install  ## the slim client's wheel, dist/pgpool_client-*.whl (clients/python)
	$(BIN)/python clients/python/build_wheel.py dist

# PgBouncer, which tests/integration/test_pgbouncer.py starts on its own port, and promtool, which
# tests/acceptance/test_alert_rules.py runs on the alert rules (Debian's prometheus package; its
# server is not started): installed with apt-get when missing (as root, or with sudo); elsewhere,
# a note (those tests then fail, saying what to install).
test-deps:  ## system packages the tests run themselves (PgBouncer, promtool)
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || { \
		if command -v apt-get >/dev/null 2>&1; then \
			SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); \
			$$SUDO apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq pgbouncer >/dev/null; \
		else \
			echo "note: pgbouncer is missing and apt-get is not available; install PgBouncer" \
				"for tests/integration/test_pgbouncer.py"; \
		fi; }
	@command -v promtool >/dev/null 2>&1 || { \
		if command -v apt-get >/dev/null 2>&1; then \
			SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); \
			$$SUDO apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
				prometheus >/dev/null; \
		else \
			echo "note: promtool is missing and apt-get is not available; install Prometheus'" \
				"tools for tests/acceptance/test_alert_rules.py"; \
		fi; }

# Debian's chromium and chromium-driver, which tests/acceptance/test_dashboard.py drives with
# selenium: installed with apt-get when missing (as root, or with sudo).
browser:  ## the headless browser of the dashboard test (chromium, chromium-driver)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
		SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

screenshot: install browser  ## docs/dashboard.png and docs/dashboard-operator.png, taken by the dashboard's browser tests
	DASHBOARD_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(BIN)/pytest -q tests/acceptance/test_dashboard.py
	DASHBOARD_OPERATOR_SCREENSHOT=$(CURDIR)/docs/dashboard-operator.png $(BIN)/pytest -q \
		tests/acceptance/test_dashboard_actions.py -k operators_pause_and_abort

pytest: install test-deps browser
	@DATABASE_URL=$(TEST_ADMIN_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
		$(BIN)/python -m worker check > /dev/null
	$(BIN)/pytest

test: lint typecheck pytest  ## everything CI checks

test-faults: install  ## only the fault suite (F1-F16): worker processes under crashes and outages
	$(BIN)/pytest -m faults

bench: check-services  ## this worker vs raw asyncpg, bare arq and SAQ, then the cost per job (~14 min): docs/performance.md
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.cost $(BENCH_COST_ARGS)

bench-producers: check-services  ## only the producers: outbox commit->start and relay, the TS and slim clients (~2 min)
	$(BIN)/python -m bench --only producers $(BENCH_ARGS)

bench-flow: check-services  ## flow control's cost: a limit never binding, 100,000 blocked jobs, priorities, vs none (~4 min)
	$(BIN)/python -m bench.flow $(BENCH_ARGS)

bench-adaptive: check-services  ## WORKER_MAX_JOBS=auto vs a fixed 10..200 on the DB job and on a slowed database (~3 min)
	$(BIN)/python -m bench.adaptive $(BENCH_ARGS)

bench-growth: check-services  ## how cost grows: max_jobs, pool, processes, queue depth, table size (~5 min)
	$(BIN)/python -m bench.growth $(BENCH_ARGS)

bench-profile: check-services  ## where a job's time goes: the worker under py-spy (~1 min); BENCH_ARGS="--paced 200" at light load
	$(BIN)/python -m bench.profile $(BENCH_ARGS)

bench-cost: check-services  ## worker CPU per job at 200 jobs/s and at full load, vs the raw pool; BENCH_ARGS="--against REV" (~5 min)
	$(BIN)/python -m bench.cost $(BENCH_ARGS)

bench-paired: check-services  ## DB-job jobs/s, this tree vs BENCH_ARGS="--against REV" in alternate rounds (~2 min)
	$(BIN)/python -m bench.paired $(BENCH_ARGS)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# requirements.lock: what the image installs (the worker, its CLI, the dashboard service and
# OpenTelemetry tracing); requirements-dev.lock: the venv (every extra: dashboard, bench, tracing,
# dev). The image's lock is resolved starting from the venv's pins (uv keeps the pins of the file it
# writes), so that the two agree on every package they share.
lock:  ## re-pin requirements*.lock from pyproject.toml (needs network)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --no-emit-index-url --quiet -o requirements-dev.lock
	cp requirements-dev.lock requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dashboard --extra tracing --python-version 3.11 --no-emit-index-url --quiet -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
