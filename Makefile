# The two commands of the README: `make demo` and `make test`. Each creates .venv and
# installs what it needs (Python packages from PyPI, the Kafka broker jars from Maven Central).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install browser test demo check constraints clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mailstream needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/mailstream kafka fetch
	touch $@

install: $(INSTALLED)

# Headless Chromium for the browser tests (Debian packages; installed as root, else a hint).
browser: $(INSTALLED)
	$(BIN)/python -m mailstream.dev.browser

test: $(INSTALLED) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# mypy follows imports by folder, so it reads the installed layout (connectors/ as
# mailstream.connectors, ...) through a tree of symbolic links.
TYPECHECK := build/typecheck

check: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/mailstream
	ln -s $(CURDIR)/mailstream/* $(TYPECHECK)/mailstream/
	for layer in connectors streams schemas; do ln -s $(CURDIR)/$$layer $(TYPECHECK)/mailstream/$$layer; done
	cd $(TYPECHECK) && MYPYPATH=$(CURDIR)/bench $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml mailstream $(CURDIR)/bench

# The Docker image's pins: a clean install of the package alone, frozen.
constraints:
	rm -rf build/constraints-venv
	$(PYTHON) -m venv build/constraints-venv
	build/constraints-venv/bin/pip install --quiet .
	{ echo "# Every runtime dependency of mailstream-kafka, pinned for the Docker image: regenerate with"; \
	  echo "# \`make constraints\` (a clean install of the package, frozen)."; \
	  build/constraints-venv/bin/pip freeze | grep -v '^mailstream'; } > constraints.txt

demo: $(INSTALLED)
	$(BIN)/mailstream demo $(if $(REGISTRY),--registry)

clean:
	rm -rf $(VENV) var .pytest_cache
