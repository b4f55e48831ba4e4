#!/usr/bin/env bash
# Runs udrm_stress briefly (one scenario, a fixed seed) so the tool cannot rot; under --config=tsan
# and --config=asan the same run is checked by the sanitizers. Fails if the tool reports a
# violation (it prints the seed and the invariant) or exits non-zero for any other reason.
# Usage: udrm_stress_test.sh TOOL SCENARIO [extra tool args...]
set -uo pipefail
tool=$1
scenario=$2
shift 2
# The tool's defaults include armed jobs dropped without Push (the workload that found the
# defect tests/sched/armed_job_order_test.cc guards, fixed in sched/).
"$tool" --scenario="$scenario" --duration=2s --seed=14 --threads=4 "$@"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "udrm_stress_test: scenario $scenario failed (exit $rc)" >&2
  exit 1
fi
echo "udrm_stress_test: scenario $scenario passed"
