#!/usr/bin/env bash
# Remove every container, network and volume the lab made, and nothing else:
# containers and volumes carry the label dmzkit.lab; networks are the
# Podman bridges named dmzkit-<segment> (roles/lab, lab_network_prefix);
# extra ports are the veths named lx<10 hex digits> (roles/lab). Then check
# that nothing of the lab is left on the host, and fail if something is.
set -euo pipefail
command -v podman >/dev/null || { echo "clean: podman is not installed, nothing to remove"; exit 0; }
lab_range=198.18.0.0/15

# Host ends of the lab's extra ports, which keep a bridge alive after its
# network is removed.
extra_ports() { ip -o link show type veth | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep -E '^lx[0-9a-f]{10}$' || true; }
# Host interfaces that hold an address of the lab's range.
lab_addresses() { ip -o -4 address show | awk '{ print $2, $4 }' | python3 -c '
import ipaddress, sys
lab = ipaddress.ip_network(sys.argv[1])
for line in sys.stdin:
    name, address = line.split()
    if ipaddress.ip_interface(address).ip in lab:
        print(name, address)
' "$lab_range"; }

mapfile -t containers < <(podman ps -a --filter label=dmzkit.lab --format '{{.Names}}')
if [ ${#containers[@]} -gt 0 ]; then
  podman rm --force --time 5 "${containers[@]}" >/dev/null
  echo "clean: removed containers ${containers[*]}"
fi

mapfile -t ports < <(extra_ports)
for port in "${ports[@]}"; do ip link del "$port" 2>/dev/null || true; done
[ ${#ports[@]} -eq 0 ] || echo "clean: removed extra ports ${ports[*]}"

mapfile -t networks < <(podman network ls --format '{{.Name}}' | grep '^dmzkit-' || true)
if [ ${#networks[@]} -gt 0 ]; then
  podman network rm --force "${networks[@]}" >/dev/null
  echo "clean: removed networks ${networks[*]}"
fi

# A bridge outlives its network when something else was plugged into it, or
# when a run was interrupted; the next run then finds the subnet in use.
mapfile -t bridges < <(lab_addresses | awk '{ print $1 }' | sort -u | while read -r dev; do
  [ -d "/sys/class/net/$dev/bridge" ] && echo "$dev"; done)
for bridge in "${bridges[@]}"; do ip link del "$bridge"; done
[ ${#bridges[@]} -eq 0 ] || echo "clean: removed stale bridges ${bridges[*]}"

mapfile -t volumes < <(podman volume ls --filter label=dmzkit.lab --format '{{.Name}}')
if [ ${#volumes[@]} -gt 0 ]; then
  podman volume rm --force "${volumes[@]}" >/dev/null
  echo "clean: removed volumes ${volumes[*]}"
fi
if pkill -f '^[^ ]*python3 /usr/local/sbin/dmzkit-lab-switch serve'; then echo "clean: stopped the lab switch's fence agent"; fi
if command -v nft >/dev/null && nft delete table bridge dmzkit_lab_switch 2>/dev/null; then
  echo "clean: removed the lab switch's isolation rules"
fi
secrets=/var/lib/dmzkit-lab/secrets
if [ -d "$secrets" ]; then
  rm -rf --one-file-system "$secrets"
  echo "clean: removed the lab's secrets in $secrets"
fi
left=$(
  podman ps -a --filter label=dmzkit.lab --format 'container {{.Names}}'
  podman network ls --format '{{.Name}}' | grep '^dmzkit-' | sed 's/^/network /' || true
  extra_ports | sed 's/^/port /'
  lab_addresses | sed 's/^/address /'
)
if [ -n "$left" ]; then
  echo "clean: these are still there:" >&2
  echo "$left" >&2
  exit 1
fi
echo "clean: the lab is gone, no host, network, port or address of $lab_range is left (the lab image is kept; 'podman rmi' it to free space)"
