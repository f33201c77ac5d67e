#!/usr/bin/env bash
# Build the collection tarball, install it into an empty collections path and
# run a playbook from outside the repository that calls roles by FQCN.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$top/build"
ansible-galaxy collection build --force --output-path "$top/build" "$top"
tarball="$top/build/dmzkit-remote_access-$(awk '$1 == "version:" {print $2}' "$top/galaxy.yml").tar.gz"

# Dependencies (community.crypto, containers.podman, ...) come from the
# `ansible` package; Galaxy itself is not reachable from the lab machines.
ansible-galaxy collection install --force --no-deps --collections-path "$work/collections" "$tarball"

cat > "$work/playbook.yml" <<'YAML'
---
- name: Call the installed collection's roles by FQCN
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the lab role with nothing to do
      ansible.builtin.include_role:
        name: dmzkit.remote_access.lab
      vars:
        lab_state: absent
        lab_hosts: []
        lab_networks: {}

    - name: Reject an edge firewall without zones, before anything changes
      block:
        - name: Validate edge_firewall arguments
          ansible.builtin.include_role:
            name: dmzkit.remote_access.edge_firewall
      rescue:
        - name: Check the argument spec refused it
          ansible.builtin.assert:
            that: "'edge_firewall_zones' in ansible_failed_result.msg"
YAML
(
  cd "$work"
  export ANSIBLE_COLLECTIONS_PATH="$work/collections"
  ansible-galaxy collection list dmzkit.remote_access
  ansible-playbook playbook.yml
)
echo "collection: $(basename "$tarball") installs and its roles resolve by FQCN"
