# Angos developer entry points. `make run` serves a local registry; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The package test (tests/packaging) builds the .deb, runs lintian and systemd-analyze.
# prometheus ships promtool, which checks /metrics and evaluates the README's alert rules.
# chromium and chromium-driver run the web UI's browser tests (tests/api/test_ui_browser.py, Selenium
# pointed at /usr/bin/chromedriver); fonts-dejavu-core gives them the same fonts, so the same widths, everywhere.
DEB_BUILD_PACKAGES := build-essential dpkg-dev debhelper dh-virtualenv python3-venv
APT_TEST_PACKAGES := skopeo podman docker.io docker-registry redis-server apache2-utils wrk bubblewrap prometheus chromium chromium-driver fonts-dejavu-core $(DEB_BUILD_PACKAGES) lintian systemd
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-stress bench deb clean sysdeps venv

$(VENV)/bin/python:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; \
	  else echo "Please install python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python setup.cfg
	@echo "Installing angos and its dependencies into $(VENV) (the first time takes a few minutes)"
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

config.toml:
	$(PY) -m angos.devconfig > config.toml

# The server logs "ready on http://127.0.0.1:8000" once it answers (angos/ready.py); until then
# connections are refused or wait. README "Try it" shows how a script waits (for /readyz).
run: $(STAMP) config.toml
	@echo "Starting angos with ./config.toml; it logs 'ready on http://...' when it answers"
	$(VENV)/bin/angos -c config.toml server

sysdeps:
	@missing=""; for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "The tests need these Debian packages:$$missing"; \
	    echo "Install them with: sudo apt-get install$$missing"; exit 1; fi; \
	fi

# Three pytest-xdist workers, whole files each (module fixtures stay on one worker): most tests
# wait on servers and clients rather than compute, so three overlap well on two cores.
PYTEST_PARALLEL ?= -n 3 --dist loadfile

test: sysdeps $(STAMP)
	$(PY) -m pytest $(PYTEST_PARALLEL)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# The suite's bar for a shared CI machine: STRESS_RUNS (5) runs in a row of `make test`'s pytest,
# each beside two CPU-bound processes, stopping at the first failure. TESTS narrows it to some
# files (default: the whole suite); each run's output is kept in stress-logs/run-<n>.log and its
# summary line printed.
STRESS_RUNS ?= 5
TESTS ?=
test-stress: sysdeps $(STAMP)
	@mkdir -p stress-logs; hogs=""; \
	for i in 1 2; do $(PYTHON) -c 'while True: pass' & hogs="$$hogs $$!"; done; \
	trap 'kill $$hogs 2>/dev/null' EXIT; \
	for run in $$(seq $(STRESS_RUNS)); do \
	  $(PY) -m pytest -p no:cacheprovider $(PYTEST_PARALLEL) $(TESTS) > stress-logs/run-$$run.log 2>&1; status=$$?; \
	  echo "run $$run/$(STRESS_RUNS): $$(tail -n 1 stress-logs/run-$$run.log)"; \
	  [ $$status -eq 0 ] || exit $$status; \
	done

bench: sysdeps $(STAMP)
	$(PY) -m bench

# dist/angos_<version>_<arch>.deb (packaging/deb/build.sh; see README "Install from the Debian package").
deb:
	@$(MAKE) --no-print-directory sysdeps APT_TEST_PACKAGES="$(DEB_BUILD_PACKAGES)"
	packaging/deb/build.sh dist

clean:
	rm -rf $(VENV) build dist *.egg-info stress-logs
