# agentworld: `make demo` and `make test` work on a fresh machine (they install what they need).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTO_SRC := proto/agentworld/v1/env.proto
PROTO_OUT := services/agentworld/v1/env_pb2.py

.PHONY: install proto test lint demo bench infra clean

install: $(BIN)/agentworld

$(BIN)/agentworld: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Generated stubs are build output (git-ignored), never hand-edited.
proto: $(PROTO_OUT)

$(PROTO_OUT): $(PROTO_SRC) $(BIN)/agentworld
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=services --pyi_out=services --grpc_python_out=services $(PROTO_SRC)
	touch services/agentworld/v1/__init__.py

# Infrastructure the tests run against (Docker engine, Kubernetes binaries, ...): each script is idempotent.
infra:
	@for s in tests/infra/install-*.sh; do [ -e "$$s" ] || continue; echo "== $$s"; bash "$$s" || exit 1; done

test: install proto infra
	$(BIN)/pytest -q -ra

lint: install
	$(BIN)/ruff check services tests bench controller

demo: install proto
	$(BIN)/agentworld demo

bench: install proto
	$(BIN)/python bench/runtime.py

clean:
	rm -rf $(VENV) services/agentworld/v1 build *.egg-info services/*.egg-info .pytest_cache
