PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEPLOY_STAMP := $(VENV)/.installed-deploy
# pytest.ini sets a per-test timeout: a hang fails fast with the test's name.
PYTEST := $(BIN)/python -m pytest -q

.PHONY: run test unit functional e2e lint package bench image deploy system-packages clean

system-packages:
	@PYTHON=$(PYTHON) scripts/ensure-system-packages

# (Re)create the virtual environment whenever a requirements file changes.
$(STAMP): requirements.txt requirements-worker.txt requirements-dev.txt
	@PYTHON=$(PYTHON) scripts/ensure-system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

run: system-packages $(STAMP)
	$(BIN)/python -m localmode

lint: $(STAMP)
	$(BIN)/cfn-lint infra/template.yaml

# The deployable stack in dist/ (offline; tests/unit/test_package.py lints and translates it).
package: $(DEPLOY_STAMP)
	$(BIN)/python -m stack.package --out dist

test: system-packages $(STAMP) lint
	$(PYTEST) -n 3 --dist loadfile --durations=25 tests

unit: $(STAMP)
	$(PYTEST) tests/unit

functional: $(STAMP)
	$(PYTEST) tests/functional

e2e: system-packages $(STAMP)
	$(PYTEST) tests/e2e

bench: $(STAMP)
	$(BIN)/python bench/api.py

# The worker image, where a Docker engine exists (none is needed for local mode or the tests).
image:
	docker build -f runner_lambda/Dockerfile -t runner-worker .

# Deploy to the AWS account, region and endpoint of the environment (docs/deploy.md):
#   make deploy STACK=name [ACCOUNT=alias] [PARAMETERS="Key=Value ..."]
ifneq ($(filter deploy,$(MAKECMDGOALS)),)
ifeq ($(strip $(STACK)),)
$(error make deploy needs STACK=name, the CloudFormation stack to create or update (see docs/deploy.md))
endif
endif
# Deploying needs Python and the requirements only, not the system packages of local mode and
# the tests (sshd, unshare...), which a deploying machine (a Mac, a CI runner) may well lack.
$(DEPLOY_STAMP): requirements.txt requirements-worker.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

deploy: $(DEPLOY_STAMP)
	$(BIN)/python -m deploy --stack "$(STACK)" $(if $(ACCOUNT),--account "$(ACCOUNT)") \
		$(foreach parameter,$(PARAMETERS),--parameter "$(parameter)")

clean:
	rm -rf $(VENV) .runner .pytest_cache dist
