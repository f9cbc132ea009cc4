# voicecalld: `make run` starts the daemon on the mock provider, `make test`
# runs the whole suite, `make bench` the benchmarks (`make bench QUICK=1`: a
# reduced run of every benchmark, under two minutes).  Both create .venv and
# install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "voicecalld needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		--config-settings editable_mode=compat -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/twistd -n --pidfile= voicecalld $(ARGS)

test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	VOICECALLD_VENV=$(abspath $(VENV)) sh gateway/scripts/test.sh

lint: $(STAMP)
	$(BIN)/ruff check voicecalld tests twisted bench
	$(BIN)/ruff format --check voicecalld tests twisted bench
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_layers.py

format: $(STAMP)
	$(BIN)/ruff check --fix voicecalld tests twisted bench
	$(BIN)/ruff format voicecalld tests twisted bench

bench: $(STAMP)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
