# Everything installs itself: a fresh machine needs only python3, node/npm and make.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint proto bench deploy-check s1-check

$(STAMP): pyproject.toml package.json package-lock.json
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	npm ci --no-audit --no-fund --silent
	touch $@

install: $(STAMP)

## Run the main job on the embedded defaults (own PostgreSQL, local store, one process).
demo: install
	$(VENV)/bin/trace lite up --demo

lint: install
	$(PY) scripts/gen_proto.py --check
	node_modules/.bin/buf lint
	$(VENV)/bin/ruff check src tests scripts bench
	$(VENV)/bin/mypy

## Lints, then every test (unit, integration against PostgreSQL on 127.0.0.1:5432, end to end).
test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

## Offline checks of deploy/: hadolint on the Containerfile, the Helm chart rendered for kind
## and EKS, every object schema-validated, the NetworkPolicy (S1) proofs. `make test` runs them too.
deploy-check: install
	$(VENV)/bin/hadolint Containerfile
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/deploy

## S1 at run time (root): the Query Service in its own network namespace under nftables
## generated from the rendered NetworkPolicy. Fails, rather than skips, without root, ip or nft.
s1-check: install
	TRACE_S1_REQUIRED=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/unit/test_nft_translation.py \
		tests/unit/test_query_egress.py tests/deploy/test_s1_netns.py

proto: install
	$(PY) scripts/gen_proto.py

bench: install
	$(PY) bench/dispatcher_throughput.py
