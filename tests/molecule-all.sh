#!/usr/bin/env bash
# Run `molecule test` for the scenarios named as arguments, or for every
# scenario in molecule/, one at a time (scenarios share host names and
# addresses), and end with a summary line. Non-zero exit if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then
  scenarios=("$@")
else
  mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort)
fi
passed=() failed=()
for scenario in "${scenarios[@]}"; do
  start=$SECONDS
  if molecule test --scenario-name "$scenario"; then
    passed+=("$scenario")
    echo "scenario $scenario passed in $((SECONDS - start)) s"
  else
    failed+=("$scenario")
    echo "scenario $scenario FAILED after $((SECONDS - start)) s"
  fi
done

[ ${#failed[@]} -eq 0 ] || echo "failed scenarios: ${failed[*]}"
echo "molecule: ${#passed[@]} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
