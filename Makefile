# Two commands do all the set-up on a machine that has only python3:
#   make demo   – create .venv, install fogline and its extras, optimize and run the bundled example
#   make test   – create .venv, install everything, lint, type-check, run the suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint bench fuzz clean broker mosquitto

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Stamps re-install when pyproject.toml changes. The demo installs every extra the
# README's walkthroughs use (pipelines on images and video, the server, the fleet),
# so each of its commands works after 'make demo' and 'source .venv/bin/activate'
# (monitoring needs River; fine-tuning the whole network, PyTorch).
$(VENV)/.demo-stamp: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[examples,openvino,vision,serve,fleet,federated,monitor,train,zmq,secure,privacy]'
	touch $@

$(VENV)/.dev-stamp: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	touch $@

demo: $(VENV)/.demo-stamp
	$(BIN)/fogline demo

lint: $(VENV)/.dev-stamp
	$(BIN)/ruff check src tests benchmarks examples fuzz
	$(BIN)/ruff format --check src tests benchmarks examples fuzz
	$(BIN)/mypy

# The MQTT tests start a real Mosquitto on loopback, the dashboard tests drive
# Debian's Chromium; install them when missing.
broker:
	@sh scripts/ensure-mosquitto
	@sh scripts/ensure-chromium

# The fleet walkthrough's broker alone (Debian's mosquitto package, as root).
mosquitto:
	@sh scripts/ensure-mosquitto

# Two pytest-xdist workers (pyproject's addopts); `make test PYTEST_ARGS="-n 0"` runs serially.
test: lint broker
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(VENV)/.dev-stamp
	$(BIN)/python benchmarks/bench_optimize.py
	$(BIN)/python benchmarks/bench_pipeline.py

# Each atheris target in fuzz/ for FUZZ_SECONDS (make test runs each for 2 s). New inputs
# go to .fuzz/<target>/, not into the committed seeds; a crash stops the run and leaves its
# input in .fuzz/<target>-crash-*: fix it, then keep it in fuzz/regressions/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= model spec oip_http oip_grpc mqtt release
fuzz: $(VENV)/.dev-stamp
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p .fuzz/$$t; \
		if $(BIN)/python fuzz/$$t.py .fuzz/$$t fuzz/corpus/$$t -max_total_time=$(FUZZ_SECONDS) \
			-artifact_prefix=.fuzz/$$t- > .fuzz/$$t.log 2>&1; \
		then echo "$$t: $$(grep -E '^Done [0-9]+ runs' .fuzz/$$t.log)"; \
		else tail -n 40 .fuzz/$$t.log; echo "$$t: CRASH (input: .fuzz/$$t-crash-*, log: .fuzz/$$t.log)"; exit 1; fi; \
	done

clean:
	rm -rf $(VENV) demo-out .fuzz .pytest_cache .mypy_cache .ruff_cache
