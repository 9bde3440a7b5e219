# Two entry points (see README.md): `make run` and `make test`. Both set everything up.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test setup kernelspec chromium bench lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

kernelspec: setup
	$(PY) -m wrapperkernel install --sys-prefix

# Browser tests drive Debian's Chromium; Playwright never downloads a browser here.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "Installing Chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; \
	fi

run: kernelspec
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 examples/demo.ipynb

test: kernelspec chromium
	node --test js/test/
	$(PY) -m pytest -ra

bench: kernelspec
	$(PY) bench/run_bench.py --out docs/benchmarks.md

lint: setup
	$(VENV)/bin/ruff check wrapperkernel tests bench
