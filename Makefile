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

# `make bench` runs every benchmark in bench/ (bench/README.md), each writing its own
# section of docs/benchmarks.md. setup (via kernelspec) installs the test extras, so a
# fresh clone gets xeus-python and jupyter-ui-poll; chromium is for browser_bench.py.
# Each script must end within BENCH_LIMIT_S; a missing script, a failure or an overrun
# is reported at the end and fails the target (after the others have run).
# BENCH_LOCK=/path runs each script under `flock` on that file (a machine shared with
# other timed runs).
# The memory soak (`memory_bench.py --soak`) runs the chaos test for 10 minutes by
# definition, so it runs last, with a limit of its own.
# The three-kernel scripts (BENCH_REPEATED) run BENCH_RUNS times, each run under the
# limit, keeping their raw results in build/bench-runs; bench/runs_report.py then writes
# issue 13's targets run by run (the scripts' own sections show the last run).
BENCH_SCRIPTS := run_bench comm_bench transport_bench backpressure_bench binary_bench \
                 debugger_bench subshell_bench browser_bench memory_bench
BENCH_REPEATED := run_bench comm_bench
BENCH_RUNS ?= 3
BENCH_RUNS_DIR := build/bench-runs
BENCH_LIMIT_S ?= 600
BENCH_SOAK_LIMIT_S ?= 780
BENCH_LOCK ?=

bench: kernelspec chromium
	@failed=""; rm -rf $(BENCH_RUNS_DIR); mkdir -p $(BENCH_RUNS_DIR); \
	for script in $(BENCH_SCRIPTS); do \
	  if [ ! -f bench/$$script.py ]; then \
	    echo "make bench: bench/$$script.py does not exist" >&2; failed="$$failed $$script(missing)"; continue; \
	  fi; \
	  runs=1; case " $(BENCH_REPEATED) " in *" $$script "*) runs=$(BENCH_RUNS);; esac; \
	  run=1; while [ $$run -le $$runs ]; do \
	    echo "== bench/$$script.py, run $$run of $$runs ($$(date -u +%H:%M:%S) UTC; limit $(BENCH_LIMIT_S) s)"; \
	    start=$$(date +%s); \
	    $(if $(BENCH_LOCK),flock $(BENCH_LOCK)) timeout --kill-after=30 $(BENCH_LIMIT_S) \
	      $(PY) bench/$$script.py $$([ $$runs -gt 1 ] && echo --json $(BENCH_RUNS_DIR)/$$script-$$run.json); \
	    status=$$?; \
	    echo "== bench/$$script.py, run $$run: exit $$status after $$(( $$(date +%s) - start )) s"; \
	    if [ $$status = 124 ] || [ $$status = 137 ]; then failed="$$failed $$script(run $$run over $(BENCH_LIMIT_S) s)"; \
	    elif [ $$status != 0 ]; then failed="$$failed $$script(run $$run exit $$status)"; fi; \
	    run=$$((run + 1)); \
	  done; \
	done; \
	$(PY) bench/runs_report.py --out docs/benchmarks.md \
	  --kernel-runs $$(ls $(BENCH_RUNS_DIR)/run_bench-*.json 2>/dev/null) \
	  --comm-runs $$(ls $(BENCH_RUNS_DIR)/comm_bench-*.json 2>/dev/null) \
	  || failed="$$failed runs_report"; \
	echo "== bench/memory_bench.py --soak ($$(date -u +%H:%M:%S) UTC; limit $(BENCH_SOAK_LIMIT_S) s)"; \
	start=$$(date +%s); \
	$(if $(BENCH_LOCK),flock $(BENCH_LOCK)) timeout --kill-after=30 $(BENCH_SOAK_LIMIT_S) \
	  $(PY) bench/memory_bench.py --soak; status=$$?; \
	echo "== bench/memory_bench.py --soak: exit $$status after $$(( $$(date +%s) - start )) s"; \
	if [ $$status != 0 ]; then failed="$$failed memory_bench--soak(exit $$status)"; fi; \
	if [ -n "$$failed" ]; then echo "make bench FAILED:$$failed" >&2; exit 1; fi; \
	echo "make bench: all $(words $(BENCH_SCRIPTS)) benchmarks and the soak ran; see docs/benchmarks.md"

lint: setup
	$(VENV)/bin/ruff check wrapperkernel tests bench
