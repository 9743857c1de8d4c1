# The two commands a newcomer needs (see README.md):
#   make run    install urbangeo into .venv and run the default city offline
#   make test   install urbangeo with its test tools and run the linters and the tests
#               (the QGIS plugin's tests run in QGIS's own Python: scripts/test-qgis.sh)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint system-deps

$(BIN)/urbangeo: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/urbangeo captions setup --quiet
	touch $@

install: $(BIN)/urbangeo

run: install
	$(BIN)/urbangeo run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy urbangeo

system-deps:
	bash scripts/install-system-deps.sh

test: system-deps lint
	$(BIN)/python -m pytest
	bash scripts/test-qgis.sh
