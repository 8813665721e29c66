# Two commands do everything on a fresh machine:  `make serve`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DIR ?= $(abspath ../shared)
MODEL_DIR ?= $(SHARED_DIR)/models/sentiment-minilm-sst2
export SHARED_DIR MODEL_DIR

.PHONY: serve test lint bench images install system-deps image-deps kubectl

## serve: run Redis + predictor + transformer locally (Ctrl-C stops all)
serve: install
	$(VENV)/bin/honcho -f Procfile start

## test: run the whole test suite (unit, real-process integration, manifests, images' root filesystems, lint)
test: install images
	$(VENV)/bin/ruff check serving predictor transformer harness tests bench
	$(PY) -m pytest

## images: build every image from its Dockerfile (docker, else buildah) and print their sizes
images: install image-deps
	$(PY) -m harness.images build

## bench: run every benchmark under bench/ (not part of the tests)
bench: install
	$(PY) -m bench.run_all

install: system-deps $(VENV)/.installed kubectl

# kserve/ needs kustomize v5 (components, replacements, patches); Debian's kubernetes-client is
# kubectl 1.20 with kustomize v2. Keeps a current kubectl found on PATH, else installs one into .venv/bin.
kubectl: $(VENV)/.installed
	$(PY) -m tests.kserve.kubectl

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU torch first, so nothing below can pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet --constraint constraints.txt -e '.[predictor,torch,transformer,dev,bench]'
	touch $@

# chromium (and a font) for the offline /docs test in a real browser.
system-deps:
	@command -v redis-server >/dev/null && command -v openssl >/dev/null && command -v bwrap >/dev/null \
	  && command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	    redis-server openssl bubblewrap prometheus chromium fonts-liberation; }

# buildah builds without a Docker engine; podman imports a stand-in base and reports sizes; mmdebstrap
# makes that stand-in when the base image cannot be pulled.
image-deps:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { \
	  command -v buildah >/dev/null && command -v podman >/dev/null && command -v mmdebstrap >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq buildah podman \
	    mmdebstrap; }; }
