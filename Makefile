# Two commands for a fresh Linux machine with Python 3.11 (see README "Quick start"):
#   make run    install everything into .venv and launch the studio
#   make test   install everything into .venv and run the test suite
# Both are idempotent: the venv is rebuilt only when requirements.txt or pyproject.toml change.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
ARCH   := $(shell uname -m)
ifeq ($(ARCH),x86_64)
TORCH  := torch==2.14.1 torchvision==0.29.1
else
TORCH  := torch==2.9.1 torchvision==0.24.1
endif

.PHONY: install run test test-all browser bench weights clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -r requirements.txt
	# facenet-pytorch pins torch<2.3 in its metadata: install without deps so torch is never downgraded.
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) app.py

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ""

# Every benchmark that runs on this machine as it is; paper_table.py needs the released weights and the GUIDE sample
# photos (run it by hand: python benchmarks/paper_table.py --photos DIR).
bench: install
	for f in benchmarks/*.py; do [ "$$f" = benchmarks/paper_table.py ] || $(PY) $$f || exit 1; done

# Every weight file of the paper's bundle, one command. Licences are printed first; NVIDIA's EG3D licence is
# non-commercial and must be accepted: GUIDE_ACCEPT_LICENCE=1 make weights
weights: install
	$(PY) -m guide_core weights fetch --all

clean:
	rm -rf $(VENV)
