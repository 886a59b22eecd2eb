# agentworld: `make demo` and `make test` work on a fresh machine (they install what they need).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTO_SRC := proto/agentworld/v1/env.proto
PROTO_OUT := services/agentworld/v1/env_pb2.py

.PHONY: install proto test lint demo bench infra clean k8s-bins test-k8s bench-k8s router

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

# The gateway's data plane (router/, Go), cached under ~/.cache/agentworld/bin; the gateway forwards calls itself
# without it, at several times the CPU per call.
router:
	bash router/build.sh

test: install proto router infra
	$(BIN)/pytest -q -ra

lint: install
	$(BIN)/ruff check services tests bench controller

demo: install proto router
	$(BIN)/agentworld demo

bench: install proto
	$(BIN)/python bench/runtime.py

# Container images (tests/docker): a Python base made from Debian packages (no registry), the runtime, and one small
# image per environment. BUNDLES=dir builds those; without it the offline default set is synthesised first.
BUNDLES ?=
ENVS_N ?= 20
.PHONY: base-image build-envs bench-images
base-image: install proto
	bash tests/infra/install-docker.sh
	$(BIN)/agentworld images base

build-envs: base-image
	@if [ -z "$(BUNDLES)" ]; then $(BIN)/agentworld synth --out build/envs --n $(ENVS_N) --resume; fi
	$(BIN)/agentworld images build $(or $(BUNDLES),build/envs) $(if $(PUSH),--push $(PUSH))

bench-images: base-image
	$(BIN)/python bench/images.py

# Kubernetes: binaries built from Go modules (cached), tests on a real API server, the 10,000-pod kwok benchmark.
k8s-bins:
	bash tests/infra/install-k8s.sh

test-k8s: install proto k8s-bins
	$(BIN)/pytest -q -ra tests/k8s

bench-k8s: install proto k8s-bins
	$(BIN)/python bench/k8s_scale.py

clean:
	rm -rf $(VENV) services/agentworld/v1 build *.egg-info services/*.egg-info .pytest_cache
