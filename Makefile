# The two commands a new user needs: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: serve test lint typecheck pytest install clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	@echo "installing dependencies into $(VENV) (a minute or two on a fresh machine) ..."
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[embedded,replay,test]'
	@echo "installed."
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/python -m dispatch serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy dispatch geo websocket tests

# The browser tests drive Debian's Chromium (Playwright's own browser download is never used): installed here
# when missing and run as root on Debian; otherwise this says what to install.
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Chromium for the browser tests (apt-get install chromium) ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "the browser tests need Chromium at $(CHROMIUM): on Debian, as root: apt-get install -y chromium"; \
	    echo "(or set CHROMIUM=/path/to/chromium)"; \
	    exit 1; \
	  fi; \
	fi

pytest: $(STAMP) browser
	TEST_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
