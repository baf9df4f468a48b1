# Sourced by the scripts/device_*.sh scripts: `step NAME LIMIT_S COMMAND...` runs COMMAND with a time limit when
# STEPS (default all) names it, appending its output, exit status and seconds to $log.
step() {
  local name=$1 limit=$2 t0; shift 2
  [[ " ${STEPS:-all} " == *" all "* || " ${STEPS:-all} " == *" $name "* ]] || return 0
  t0=$(date +%s.%N)
  echo "== $name (limit ${limit} s): $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "== $name: exit ${PIPESTATUS[0]} after $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$log"
}
