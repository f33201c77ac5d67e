#!/usr/bin/env bash
# Run `molecule test` for the lab configurations named as arguments, or for
# every one in molecule/, one at a time (they share host names and
# addresses). Each is deployed once (check on fresh hosts, converge,
# idempotence) and every journey under its tests/ runs against it. Ends with
# the time budget (minutes per configuration and per journey, running total)
# and a summary line; non-zero exit if any failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [ $# -gt 0 ]; then
  scenarios=("$@")
else
  mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort)
fi
# Each configuration's output is also kept in tests/output/molecule/<name>.log;
# a failure's telling lines are repeated at the end, where CI's tail shows them.
logs=tests/output/molecule
mkdir -p "$logs"
minutes() { awk -v s="$1" 'BEGIN { printf "%5.1f", s / 60 }'; }

# Hosts left by `make demo` or an interrupted run would share the wire with
# the configurations' hosts (a VNC backup host's watchdog fences a gateway it
# takes for dead): start from an empty lab.
bash lab/clean.sh

# Passes Molecule's output through and adds a line "action <name>: N s"
# when each of its actions (check, converge, idempotence, ...) ends.
time_actions() {
  local line started=$SECONDS
  while IFS= read -r line; do
    printf '%s\n' "$line"
    if [[ $line =~ ^INFO\ +\[[a-z_]+\ \>\ ([a-z_]+)\]\ Executing$ ]]; then
      started=$SECONDS
    elif [[ $line =~ ^INFO\ +\[[a-z_]+\ \>\ ([a-z_]+)\]\ Executed ]]; then
      echo "action ${BASH_REMATCH[1]}: $((SECONDS - started)) s"
    fi
  done
}

passed=() failed=() budget=() run_logs=() total=0
for scenario in "${scenarios[@]}"; do
  start=$SECONDS
  run_logs+=("$logs/$scenario.log")
  if NO_COLOR=1 molecule test --scenario-name "$scenario" 2>&1 | time_actions | tee "$logs/$scenario.log"
     test "${PIPESTATUS[0]}" -eq 0; then
    passed+=("$scenario") outcome=passed
  else
    failed+=("$scenario") outcome=FAILED
  fi
  spent=$((SECONDS - start)) total=$((total + SECONDS - start))
  echo "configuration $scenario $outcome in $spent s"
  budget+=("$(minutes "$spent") min  $(minutes "$total") min  configuration $scenario ($outcome)")
  while read -r line; do
    seconds=${line##*[: ] } seconds=${seconds% s}
    budget+=("$(minutes "$seconds") min              ${line}")
  done < <(grep -E '^action (check|converge|idempotence): [0-9]+ s$|^ *(│ )?journey [a-z_]+: .* in [0-9]+ s$' "$logs/$scenario.log" \
             | sed -E 's/^ *(│ )?//; s/ in ([0-9]+ s)$/: \1/')
done

for scenario in "${failed[@]}"; do
  echo "--- $scenario: what failed (whole output in $logs/$scenario.log)"
  grep -v -E '^ *(│ )?[-+@]' "$logs/$scenario.log" | grep -E '^E  |fatal: |FAILED|failed=[1-9]|Error|ERROR|Traceback|    msg: ' \
    | grep -v 'ignoring' | tail -n 30
done

# No secret of the lab may reach a log (CI keeps the output): every value in
# the lab's secrets directory (lab_secrets_dir) is looked for in every
# configuration's output, before the clean-up below removes them.
secrets=/var/lib/dmzkit-lab/secrets
if [ -d "$secrets" ]; then
  python3 tests/leaked_secrets.py "$secrets" "${run_logs[@]}" || failed+=("secrets")
else
  echo "leaked secrets: the configurations made no secret to look for"
fi

# Nothing of the lab may outlive the run: no host, network, bridge, port or address.
if ! bash lab/clean.sh; then failed+=("clean"); fi

echo "--- time budget (docs/testing.md): spent, running total, what"
printf '%s\n' "${budget[@]}"
[ ${#failed[@]} -eq 0 ] || echo "failed: ${failed[*]}"
echo "molecule: ${#passed[@]} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
