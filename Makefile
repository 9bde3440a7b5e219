# Two entry points (see README.md): `make run` and `make test`. Both set everything up.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test peer-test setup kernelspec chromium collab-venv bench lint

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

# The browser test of two users under jupyter-collaboration runs its JupyterLab from a
# virtualenv of its own: installed in $(VENV), real-time collaboration would be on in
# every other browser test. The kernel stays $(VENV)'s wrapperkernel. Its .gitignore
# keeps git (and tools that list untracked files) out of it.
COLLAB_VENV ?= .venv-collab
COLLAB_PACKAGES := jupyterlab 'jupyter-collaboration>=5' ipywidgets anywidget

collab-venv: $(COLLAB_VENV)/.installed

$(COLLAB_VENV)/.installed:
	$(PYTHON) -m venv $(COLLAB_VENV)
	echo '*' > $(COLLAB_VENV)/.gitignore
	$(COLLAB_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COLLAB_VENV)/bin/python -m pip install --quiet $(COLLAB_PACKAGES)
	touch $@

# `make run [PORT=8899] [TOKEN=secret] [NO_BROWSER=1]`. Without PORT, Jupyter picks 8888
# or the next free port; without TOKEN, it makes one and prints the URL with it (a
# token given here it prints as "...", so this recipe prints that URL itself, on a
# fixed port). As root, Jupyter refuses to start without --allow-root. On Linux with
# no display and no $BROWSER there is no browser to open: skip it instead of a warning.
PORT ?=
TOKEN ?=
NO_BROWSER ?=

run: kernelspec
	@set -e; \
	flags="--ServerApp.ip=127.0.0.1"; \
	if [ "$$(id -u)" = 0 ]; then flags="$$flags --allow-root"; fi; \
	port="$(PORT)"; \
	if [ -n "$(TOKEN)" ] && [ -z "$$port" ]; then port=8888; fi; \
	if [ -n "$$port" ]; then flags="$$flags --ServerApp.port=$$port --ServerApp.port_retries=0"; fi; \
	if [ "$(NO_BROWSER)" = 1 ] || { [ "$$(uname -s)" = Linux ] && [ -z "$$BROWSER$$DISPLAY$$WAYLAND_DISPLAY" ]; }; then \
	  flags="$$flags --no-browser"; \
	fi; \
	echo "$(VENV)/bin/jupyter lab $$flags examples/demo.ipynb"; \
	if [ -n "$(TOKEN)" ]; then \
	  export JUPYTER_TOKEN='$(TOKEN)'; \
	  echo "Open http://127.0.0.1:$$port/lab/tree/demo.ipynb?token=$(TOKEN)"; \
	fi; \
	exec $(VENV)/bin/jupyter lab $$flags examples/demo.ipynb

# ipykernel's own tests against wrapperkernel (its test_debugger.py and
# test_message_spec.py and test_subshells.py must pass): docs/ipykernel-tests.md.
test: kernelspec chromium collab-venv
	node --test js/test/
	$(PY) -m pytest -ra
	$(MAKE) peer-test

peer-test: setup
	$(PY) tests/ipykernel_peer/run.py --kernel wrapperkernel

bench: kernelspec
	$(PY) bench/run_bench.py --out docs/benchmarks.md

lint: setup
	$(VENV)/bin/ruff check wrapperkernel tests bench
