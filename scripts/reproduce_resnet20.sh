#!/usr/bin/env bash
# The main job: README's reproduction table for ResNet-20, run from the project's plan (reproduce/cifar10.toml)
# into runs/, never into the committed results/.  By default seed 0 of each recipe:
#   resnet20-adapt-s0  the pretrained full-precision model adapted to the JPEG copy (2 epochs),
#   resnet20-fp-s0     full precision trained on from it with the ternary runs' budget (the FP control),
#   resnet20-ttq-s0    TTQ from the adapted model (12 epochs, the learning rate the search chose),
#   resnet20-twn-s0    TWN from the adapted model (the same budget),
# then prints the table of these runs beside the table of the committed ones, saying whether both used the same
# data (the inputs come from the resolver: $TTQ_DATA, ../shared, the user cache, else a download; README).
# Before it trains, `ttq reproduce` prints the runs and an estimate of their time on this machine; while they run,
# a line per run (epoch, step, last accuracy, time left) and an overall one, redrawn in place on a terminal and
# printed every 30 s otherwise (--progress-every); each run that ends prints its accuracy.
# About 2 hours on 2 CPU cores.
# Rerunning continues where it stopped (`ttq reproduce` resumes each run from its last epoch); Ctrl-C or TERM
# stops the runs at once, and the next call redoes at most the epoch each was in.
#
# Overrides: ONLY (space-separated run-name patterns; 'resnet20-*' gives all three seeds, about 6.5 hours),
# JOBS (trainings at once, CPU threads split between them; default 2), RESULTS (default runs), PLAN, DATA
# (another CIFAR-10 source than the plan's), TTQ (the ttq command), PYTHON.  Other arguments go to
# `ttq reproduce` (e.g. --budget-min 170 to stop, checkpointed, before a session ends).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ttq=${TTQ:-.venv/bin/ttq}
py=${PYTHON:-.venv/bin/python}
plan=${PLAN:-reproduce/cifar10.toml}
results=${RESULTS:-runs}
read -ra only <<<"${ONLY:-resnet20-*-s0}"  # read, not word splitting: the patterns are not globbed here
data=()
if [ -n "${DATA:-}" ]; then data=(--data "$DATA"); fi
name=$("$py" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["name"])' "$plan")

# In the background and waited for, so that a TERM or Ctrl-C sent to this script is handled at once: it is
# passed on as TERM (a background job of a script ignores SIGINT), which `ttq reproduce` takes like Ctrl-C.
"$ttq" reproduce "$plan" --results "$results" --jobs "${JOBS:-2}" --only "${only[@]}" ${data[@]+"${data[@]}"} "$@" &
pid=$!
stop() {
  trap - INT TERM
  echo "$0: stopped by SIG$1; stopping the runs (the next call continues them)" >&2
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  exit "$2"
}
trap 'stop INT 130' INT
trap 'stop TERM 143' TERM
status=0
wait "$pid" || status=$?
if [ "$status" -ne 0 ]; then
  echo "$0: \`ttq reproduce\` ended with status $status (its reason is above: a failed run names its log)" >&2
  exit "$status"
fi

echo
echo "Your runs ($results/$name):"
if [ -d "results/$name" ] && [ "$results" != results ]; then
  # then the committed runs (README's table), and whether both ran on the same data
  "$ttq" table "$results/$name" --beside "results/$name"
else
  "$ttq" table "$results/$name"
fi
echo
echo "What to look at: the 'ResNet-20 (fp)' row's 'TTQ - FP ours', TTQ against the full-precision control that" \
     "trained as long from the same adapted model (percentage points of test error, negative = TTQ better), beside" \
     "the paper's 'TTQ - FP paper'. One seed gives no interval: the committed table's three seeds do (ONLY='resnet20-*'" \
     "runs all three here)."
