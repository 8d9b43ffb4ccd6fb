# Forge: `make run` starts the app and its sidecar on the offline defaults; `make test` tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SIDECAR_PORT ?= 8765
APP_PORT ?= 8501
BIND ?= 127.0.0.1

.PHONY: run test lint bench db clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: $(BIN)/python requirements.txt requirements-nodeps.txt pyproject.toml
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

db: $(VENV)/.runtime
	$(BIN)/forge db init

run: db
	@$(BIN)/forge up --sidecar-port $(SIDECAR_PORT) --app-port $(APP_PORT) --bind $(BIND)

# Two workers for everything but the wall-clock tests, which then run alone (a barge-in timed
# beside another worker's Whisper measures the machine, not Forge).
test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -ra -n 2 --dist loadfile -m "not wallclock"
	$(BIN)/python -m pytest -q -ra -m wallclock

lint: $(VENV)/.dev
	$(BIN)/ruff check .

bench: $(VENV)/.dev
	$(BIN)/python bench/routing.py
	$(BIN)/python bench/dialogues.py
	$(BIN)/python bench/knowledge.py
	$(BIN)/python bench/evals.py
	$(BIN)/python bench/stt_accuracy.py --windows 10
	$(BIN)/python bench/turn_latency.py
	$(BIN)/python bench/speech_gaps.py
	$(BIN)/python bench/phone_latency.py

clean:
	rm -rf $(VENV) data test-artifacts .pytest_cache
