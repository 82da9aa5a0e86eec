# The two commands of the README, and the checks CI runs.
#   make serve   set up and serve on ./checkpoints.db at 127.0.0.1:50051
#   make test    set up and run the whole test suite (starts PostgreSQL if it is down)
#   make check   buf lint/format/breaking, generated code up to date, ruff, mypy --strict, hadolint,
#                prettier and tsc --strict on the TypeScript client
#   make bench   the benchmark against the in-process savers

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := -e gen/python -e server -e python_client
BREAKING_AGAINST ?= .git\#ref=HEAD~1

.PHONY: serve setup test check bench proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

# The server, and the client for its operator command (checkpoint-server threads, also
# checkpoint-threads); none of the dev tools, so the first command is quick.
$(VENV)/.server: $(BIN)/python gen/python/pyproject.toml server/pyproject.toml python_client/pyproject.toml
	$(BIN)/pip install --quiet -e gen/python -e server -e python_client
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml gen/python/pyproject.toml server/pyproject.toml python_client/pyproject.toml
	$(BIN)/pip install --quiet $(PACKAGES) --group dev
	touch $@ $(VENV)/.server

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

# The TypeScript client's dependencies, for its tests (tests/test_typescript.py) and checks.
TS := typescript_client
$(TS)/node_modules/.package-lock.json: $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund

# PostgreSQL 13, the oldest the server supports, for tests/test_oldest_postgres.py.
OLDEST := tests/oldest_postgres
$(OLDEST)/node_modules/.package-lock.json: $(OLDEST)/package.json $(OLDEST)/package-lock.json
	cd $(OLDEST) && npm ci --no-audit --no-fund

serve: $(VENV)/.server
	$(BIN)/checkpoint-server serve

setup: $(VENV)/.dev $(TS)/node_modules/.package-lock.json $(OLDEST)/node_modules/.package-lock.json

test: $(VENV)/.dev $(TS)/node_modules/.package-lock.json $(OLDEST)/node_modules/.package-lock.json
	scripts/start-postgres
	$(BIN)/python -m pytest

proto: $(VENV)/.dev node_modules/.package-lock.json $(TS)/node_modules/.package-lock.json
	PYTHON=$(BIN)/python scripts/gen-proto
	cd $(TS) && npm run --silent gen

check: $(VENV)/.dev node_modules/.package-lock.json $(TS)/node_modules/.package-lock.json
	npx buf lint
	npx buf format -d --exit-code
	# v1 never breaks: compare the contract with the commit before (main on a branch: BREAKING_AGAINST).
	npx buf breaking --against '$(BREAKING_AGAINST)'
	PYTHON=$(BIN)/python scripts/gen-proto
	git diff --exit-code -- gen/python || (echo "generated code is stale: run make proto" >&2; exit 1)
	test -z "$$(git status --porcelain -- gen/python)" || (echo "generated code is untracked: run make proto and commit" >&2; exit 1)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold warning Dockerfile
	cd $(TS) && npm run --silent gen
	git diff --exit-code -- $(TS)/src/gen || (echo "TypeScript stubs are stale: cd $(TS) && npm run gen" >&2; exit 1)
	test -z "$$(git status --porcelain -- $(TS)/src/gen)" || (echo "TypeScript stubs are untracked: commit them" >&2; exit 1)
	cd $(TS) && npm run --silent lint

bench: $(VENV)/.dev
	scripts/start-postgres
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) node_modules
