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
# Each scenario's output is also kept in tests/output/molecule/<scenario>.log;
# a failure's telling lines are repeated at the end, where CI's tail shows them.
logs=tests/output/molecule
mkdir -p "$logs"
passed=() failed=()
for scenario in "${scenarios[@]}"; do
  start=$SECONDS
  if molecule test --scenario-name "$scenario" 2>&1 | tee "$logs/$scenario.log"; test "${PIPESTATUS[0]}" -eq 0; then
    passed+=("$scenario")
    echo "scenario $scenario passed in $((SECONDS - start)) s"
  else
    failed+=("$scenario")
    echo "scenario $scenario FAILED after $((SECONDS - start)) s"
  fi
done

for scenario in "${failed[@]}"; do
  echo "--- $scenario: what failed (whole output in $logs/$scenario.log)"
  sed 's/\x1b\[[0-9;]*m//g' "$logs/$scenario.log" \
    | grep -v -E '^ *(│ )?[-+@]' | grep -E '^E  |fatal: |FAILED|failed=[1-9]|Error|ERROR|Traceback|    msg: ' \
    | grep -v 'ignoring' | tail -n 30
done
[ ${#failed[@]} -eq 0 ] || echo "failed scenarios: ${failed[*]}"
echo "molecule: ${#passed[@]} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
