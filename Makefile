# Forge: `make run` starts the app and its sidecar on the offline defaults; `make test` tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SIDECAR_PORT ?= 8765
APP_PORT ?= 8501

.PHONY: run test lint bench db clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

db: $(VENV)/.runtime
	$(BIN)/forge db init

run: db
	@echo "Forge: app on http://127.0.0.1:$(APP_PORT), sidecar on http://127.0.0.1:$(SIDECAR_PORT) (Ctrl-C stops both)"
	@trap 'kill 0' INT TERM EXIT; \
	FORGE_SIDECAR_URL=http://127.0.0.1:$(SIDECAR_PORT) $(BIN)/uvicorn server.main:create_app --factory --host 127.0.0.1 --port $(SIDECAR_PORT) & \
	FORGE_SIDECAR_URL=http://127.0.0.1:$(SIDECAR_PORT) $(BIN)/streamlit run app.py --server.headless true --server.port $(APP_PORT) --browser.gatherUsageStats false & \
	wait

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -ra

lint: $(VENV)/.dev
	$(BIN)/ruff check .

bench: $(VENV)/.dev
	$(BIN)/python bench/turn_latency.py
	$(BIN)/python bench/phone_latency.py

clean:
	rm -rf $(VENV) data test-artifacts .pytest_cache
