# The two set-up commands (see README): `make demo` and `make test`.
# Each creates or updates the virtual environment, installs bitnn, then runs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bitnn-installed

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[train,speech,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo_mnist.py

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:  # the compiled kernels too, and the stamp, so that the next run builds them again
	rm -rf build src/*.egg-info src/bitnn/*/*.so $(STAMP)
