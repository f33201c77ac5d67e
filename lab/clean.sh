#!/usr/bin/env bash
# Remove every container, network and volume the lab made, and nothing else:
# containers and volumes carry the label dmzkit.lab; networks are the
# Podman bridges named dmzkit-<segment> (roles/lab, lab_network_prefix).
set -euo pipefail
command -v podman >/dev/null || { echo "clean: podman is not installed, nothing to remove"; exit 0; }

mapfile -t containers < <(podman ps -a --filter label=dmzkit.lab --format '{{.Names}}')
if [ ${#containers[@]} -gt 0 ]; then
  podman rm --force --time 5 "${containers[@]}" >/dev/null
  echo "clean: removed containers ${containers[*]}"
fi

mapfile -t networks < <(podman network ls --format '{{.Name}}' | grep '^dmzkit-' || true)
if [ ${#networks[@]} -gt 0 ]; then
  podman network rm --force "${networks[@]}" >/dev/null
  echo "clean: removed networks ${networks[*]}"
fi

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
echo "clean: the lab is gone (the lab image is kept; 'podman rmi' it to free space)"
