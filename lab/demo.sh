#!/usr/bin/env bash
# make demo: start the whole lab, deploy every role to its group, then run
# the users' journeys. Everything it starts is removed by `make clean`.
set -euo pipefail
cd "$(dirname "$0")/.."
inventory=inventories/lab

step() { printf '\n==== %s\n' "$*"; }

step "lab: starting every host of $inventory"
ansible-playbook -i "$inventory" playbooks/lab.yml
step "site: deploying every role to its group"
ansible-playbook -i "$inventory" playbooks/site.yml
step "journeys"
ansible-playbook -i "$inventory" playbooks/journeys.yml
step "done: the lab keeps running; 'podman ps' lists it, 'make clean' removes it"
