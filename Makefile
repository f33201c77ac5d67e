# dmzkit.remote_access: set-up, lab, tests and demo.
# Every target installs what it needs first and is safe to run again.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
COLLECTION_LINK := $(VENV)/collections/ansible_collections/dmzkit/remote_access

export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(VENV)/collections
# mitogen's strategies, for runs that choose one with ANSIBLE_STRATEGY
# (docs/testing.md, "Faster Ansible"); stock Ansible does not look here.
export ANSIBLE_STRATEGY_PLUGINS := $(VENV)/mitogen-strategy
export ANSIBLE_FORCE_COLOR := false
# Read when a recipe runs, so it sees the image `make image` just built.
export DMZKIT_LAB_IMAGE = $(shell cat $(CURDIR)/.lab-image 2>/dev/null)

LAB_INVENTORY := inventories/lab

.PHONY: help setup host venv image lab-up lab-down clean lint sanity docs build unit molecule test demo

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: host venv image ## Install host packages, the venv and the lab image

host: ## Install the Debian packages the lab needs (only missing ones)
	bash lab/host-setup.sh

venv: $(VENV)/.installed ## Create .venv from requirements.txt pinned by requirements.lock

$(VENV)/.installed: requirements.txt requirements.lock | host
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt -c requirements.lock
	mkdir -p $(dir $(COLLECTION_LINK))
	ln -sfn $(CURDIR) $(COLLECTION_LINK)
	ln -sfn "$$($(VENV)/bin/python -c 'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))')/plugins/strategy" $(VENV)/mitogen-strategy
	touch $@

image: host ## Build the lab image (only when its recipe changed) and probe the runtime
	bash lab/image/build.sh > .lab-image.tmp
	mv .lab-image.tmp .lab-image
	bash lab/runtime/probe.sh "$$(cat .lab-image)"

lab-up: setup ## Start every host of the lab inventory
	ansible-playbook -i $(LAB_INVENTORY) playbooks/lab.yml

lab-down: venv ## Stop and remove the lab hosts, keep the networks
	ansible-playbook -i $(LAB_INVENTORY) playbooks/lab.yml -e lab_state=absent

clean: ## Remove every container, network and volume the lab made, and nothing else
	bash lab/clean.sh

lint: docs sanity ## yamllint, ansible-lint (production profile), pyflakes, role twins, changelog, role docs up to date, sanity
	yamllint --strict .
	pyflakes src plugins tests molecule bench lab
	python3 tests/role_twins.py
	ansible-lint
	antsibull-changelog lint
	git diff --exit-code --stat -- 'roles/*/README.md' || { echo "role READMEs are stale: run make docs and commit" >&2; exit 1; }

sanity: venv ## ansible-test sanity on the working tree (docs/testing.md, "Sanity")
	bash tests/sanity.sh

docs: venv ## Regenerate each role's README.md from its meta/argument_specs.yml
	for role in roles/*/; do aar-doc --output-mode replace "$$role" markdown >/dev/null; done

build: venv ## Build the collection tarball and prove an installed copy works
	bash tests/collection-install.sh

unit: venv ## Unit tests (fast)
	pytest tests/unit

molecule: setup ## Every lab configuration and its journeys, or those in SCENARIO="a b"
	bash tests/molecule-all.sh $(SCENARIO)

test: setup lint build unit molecule ## Everything CI runs

demo: setup ## Deploy the stack into the lab and run the users' journeys
	bash lab/demo.sh
