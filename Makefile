# The two commands the README starts with: `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
LAB ?= labs/basic.clab.yml

.PHONY: setup demo demo-down test lint unit lab-test

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh $(LAB)

demo-down:
	$(BIN)/fabric-lab down $(LAB)

lint: setup
	$(BIN)/ruff check fabricd fabric_lab tests bench
	$(BIN)/mypy fabricd fabric_lab

unit: setup
	$(BIN)/pytest -q -m "not lab"

lab-test: setup
	$(BIN)/pytest -q -m lab

# Everything CI runs: lint, type check, unit and lab tests (lab tests need root).
test: lint
	$(BIN)/pytest -q -ra
