#!/usr/bin/env bash
# Install the Debian packages in host-packages.txt that are missing.
# Idempotent: does nothing (and does not touch apt) when all are present.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/host-packages.txt")
missing=()
for pkg in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "host packages: all ${#wanted[@]} present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "host packages missing (${missing[*]}); run as root to install them" >&2
  exit 1
fi
echo "host packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
# The SSO tests start a redis-server and a PostgreSQL of their own on
# sockets in a temporary directory; the controller needs neither running
# all the time.
for pkg in redis-server postgresql; do
  if [[ " ${missing[*]} " == *" $pkg "* ]]; then
    systemctl disable --now "$pkg.service" >/dev/null 2>&1 || true
  fi
done
