# The two commands of the README: `make up` and `make test` (and `make faults`, the fault matrix). All set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: up test faults fuzz bench lint install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "xinfang needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

up: install
	$(BIN)/xinfang up

# Two workers (pytest-xdist), a test file each at a time: most of a test is waiting on NATS, a
# database or a child process, so two share the machine's cores well (README, "Tests").
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The fault matrix (tests/faults): kills, outages, poison and a clock jump under load, on SQLite and
# (with XF_TEST_POSTGRES_URL) PostgreSQL; prints each fault's recovery time.
faults: install
	$(BIN)/python -m pytest tests/faults

# schemathesis against every service's OpenAPI schema, each a real process (SQLite, and PostgreSQL with
# XF_TEST_POSTGRES_URL): no 5xx, every answer as documented. XF_FUZZ_EXAMPLES per operation (25).
fuzz: install
	$(BIN)/python -m pytest tests/fuzz

# `xinfang bench` (docs/benchmarks.md): the pipeline's speed beside a raw nats-py baseline; long at its default sizes.
bench: install
	$(BIN)/xinfang bench

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var tests/js/node_modules
