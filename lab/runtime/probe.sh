#!/usr/bin/env bash
# Decide whether this host needs the runc rlimit wrapper, and install or
# remove it accordingly. Usage: probe.sh <lab-image>
#
# The probe starts a throw-away container from the lab image with the plain
# runc. If that fails because setrlimit is refused (root without
# CAP_SYS_RESOURCE), the wrapper and a containers.conf drop-in that selects it
# are installed; otherwise any wrapper installed earlier is removed. Either
# way the final check must start a container with podman's configured runtime.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
image=${1:?usage: probe.sh <lab-image>}

wrapper=/usr/local/libexec/dmzkit/runc
dropin=/etc/containers/containers.conf.d/50-dmzkit-runc-wrapper.conf

start() { podman "$@" run --rm --pull=never --network=none "$image" /bin/true 2>&1; }
# CONTAINERS_CONF names the only configuration podman reads, so the first
# probe sees plain runc with podman's defaults, not a drop-in of ours.
empty_conf=$(mktemp)
wanted_dropin=$(mktemp)
trap 'rm -f "$empty_conf" "$wanted_dropin"' EXIT

if out=$(CONTAINERS_CONF=$empty_conf start --runtime /usr/bin/runc); then
  if [ -e "$dropin" ] || [ -e "$wrapper" ]; then
    rm -f "$dropin" "$wrapper"
    echo "runtime: plain runc works here; removed the rlimit wrapper"
  else
    echo "runtime: plain runc works here; no wrapper needed"
  fi
elif grep -q 'rlimit' <<<"$out"; then
  cat > "$wanted_dropin" <<CONF
# Installed by dmzkit.remote_access lab/runtime/probe.sh: root lacks
# CAP_SYS_RESOURCE here, so runc must not apply process.rlimits.
# See docs/lab.md ("The runtime wrapper") before removing.
[containers]
default_ulimits = []

[engine]
runtime = "runc"

[engine.runtimes]
runc = ["$wrapper"]
CONF
  if cmp -s "$here/runc" "$wrapper" && cmp -s "$wanted_dropin" "$dropin"; then
    echo "runtime: setrlimit refused; rlimit wrapper in place"
  else
    install -D -m 0755 "$here/runc" "$wrapper"
    install -D -m 0644 "$wanted_dropin" "$dropin"
    echo "runtime: setrlimit refused; rlimit wrapper installed at $wrapper"
  fi
else
  echo "runtime: a container cannot start with runc, for a reason the wrapper does not address:" >&2
  echo "$out" >&2
  exit 1
fi

if ! out=$(start); then
  echo "runtime: a container still cannot start:" >&2
  echo "$out" >&2
  exit 1
fi
