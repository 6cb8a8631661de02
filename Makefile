# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make demo   run the workflow on the embedded mock survey and build the report
#   make test   linters and the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-deps lint pytest lock clean

# The virtual environment is (re)made whenever the pins or the package metadata change.
# torch goes first and alone: with 2.13.0 already installed, nothing later pulls another build.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$$(grep '^torch==' requirements.lock)"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Extra Snakemake options for both commands, e.g. make demo DEMO_ARGS="--configfile seeds.yaml"
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/snakemake --cores all $(DEMO_ARGS)
	$(BIN)/snakemake --report results/report.html $(DEMO_ARGS)
	@echo "Report: $(CURDIR)/results/report.html"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint

pytest: $(STAMP)
	$(BIN)/pytest

# What the tests need beyond the venv: Debian's slurm-wlm and munge (the real-SLURM test) and
# chromium with its WebDriver (the report and explorer tests). Installed, quietly, when missing
# and running as root with apt-get; otherwise a note,
# and the tests that need them skip saying why.
TEST_PACKAGES := slurm-wlm munge chromium chromium-driver
TEST_BINARIES := slurmctld slurmd sinfo munged chromium chromedriver
test-deps:
	@export PATH="$$PATH:/usr/sbin:/sbin"; missing=; \
	for b in $(TEST_BINARIES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "test-deps: installing $(TEST_PACKAGES) (missing:$$missing)"; \
	  out=$$(mktemp); { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(TEST_PACKAGES); } >$$out 2>&1 \
	  || { cat $$out; echo "test-deps: apt-get install $(TEST_PACKAGES) failed; the SLURM tests will skip"; }; rm -f $$out; \
	else echo "test-deps: not root or no apt-get; missing:$$missing; the tests that need them will skip"; fi

test: test-deps lint pytest

# Refresh the pins from the current environment (after changing a dependency on purpose).
lock: $(STAMP)
	{ sed -n '1,2p' requirements.lock; $(BIN)/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf results resources .snakemake
