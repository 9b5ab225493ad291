# One command for everything a new machine needs: `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test unit venv harness lint images demo multinode
venv: $(VENV)/.installed
$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

harness:
	bash scripts/harness.sh

# The 3-node test swarm of the multinode tests (they start it themselves when needed).
multinode: venv harness
	bash scripts/multinode.sh up

test: venv lint harness
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Without the engine, in under a minute: the whole fuzz corpus (`corpus`) is left to `make test`.
unit: venv
	$(PY) -m pytest -q -m 'not swarm and not corpus' $(PYTEST_ARGS)

# Part of `make test`: ruff (pinned, with C90 and RUF), mypy --strict on the packages.
lint: venv
	$(VENV)/bin/ruff check compose_translator upgrade_manager lb tests scripts examples
	$(VENV)/bin/mypy --strict compose_translator upgrade_manager lb
	$(VENV)/bin/mypy tests scripts

images: venv harness
	bash examples/voting-app/build.sh

# The voting-app demo: deploy v1, upgrade under load, print the counts.
demo: images
	$(PY) scripts/demo.py $(DEMO_ARGS)
