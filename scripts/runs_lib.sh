# Sourced by the training scripts (not run on its own): start training runs in the background, each with a
# log file, wait for each by its PID, and stop them all when one fails or on Ctrl-C / TERM.
#
# Why the background even for one run: bash runs a trap only after the foreground command ends, so a TERM sent
# to the script would wait for hours of training; `wait PID` returns at once when a trapped signal arrives.
# Why each PID: a bare `wait` returns 0 even when a background run failed.
# The scripts set -Eeuo pipefail (-E: the ERR trap below also fires inside functions).

run_pids=() run_names=() run_logs=()

stop_runs() {  # TERM every run still going, then wait for each, so none outlives the script
  local pid
  if [ ${#run_pids[@]} -eq 0 ]; then return 0; fi
  kill -TERM "${run_pids[@]}" 2>/dev/null || true
  for pid in "${run_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  run_pids=() run_names=() run_logs=()
}

on_signal() {  # on_signal SIGNAL STATUS
  trap - INT TERM
  echo "$0: stopped by SIG$1; stopping the training runs it started: ${run_names[*]:-none was running}" >&2
  stop_runs
  exit "$2"
}

trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'stop_runs' EXIT
trap 'echo "$0: line $LINENO failed with status $?: $BASH_COMMAND" >&2' ERR

start_run() {  # start_run NAME LOG tee|quiet CMD...: CMD in the background, output into LOG (tee: and the terminal)
  local name=$1 log=$2 show=$3
  shift 3
  mkdir -p "$(dirname "$log")"
  if [ "$show" = tee ]; then "$@" > >(tee "$log") 2>&1 & else "$@" > "$log" 2>&1 & fi
  run_pids+=("$!") run_names+=("$name") run_logs+=("$log")
  echo "$name: started (pid $!, log $log)"
}

wait_runs() {  # wait for every started run; the first that fails stops the others and exits with its status
  local i name log status
  while [ ${#run_pids[@]} -gt 0 ]; do
    for i in "${!run_pids[@]}"; do
      if kill -0 "${run_pids[$i]}" 2>/dev/null; then continue; fi
      status=0
      wait "${run_pids[$i]}" || status=$?
      name=${run_names[$i]} log=${run_logs[$i]}
      unset 'run_pids[i]' 'run_names[i]' 'run_logs[i]'
      if [ "$status" -ne 0 ]; then
        echo "$0: training run $name failed with exit status $status; see its log $log" >&2
        stop_runs
        exit "$status"
      fi
    done
    if [ ${#run_pids[@]} -gt 0 ]; then
      sleep 0.2 &
      wait $! || true  # `wait`, unlike a foreground sleep, lets a TERM trap run at once
    fi
  done
}
