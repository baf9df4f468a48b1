#!/usr/bin/env bash
# One call on a lent GPU machine: run a reproduction plan for a time budget, then pack its results into $OUT.
#
#   usage (on the GPU machine, in the checkout's root): scripts/device_reproduce.sh PLAN BUDGET_MIN [JOBS]
#
# What the call needs, carried from the home machine (folders git ignores, named in the call's carry list):
#   .device/shared/    a copy of ../shared/data/cifar10-jpeg.tar.gz and ../shared/pretrained/*.th in the same
#                      layout; copied to ../shared when the machine has none, so the plan's paths resolve as at home
#   results/<plan>/    the plan's run folders from earlier calls or CPU sessions (state.pt included), if any
# It writes to $OUT: reproduce.log and `ttq reproduce --export` (parts of at most 15 MiB and a manifest).  At
# home: `ttq reproduce PLAN --import <the returned folder>` merges them into results/<plan>/ (a run finished
# at home is never replaced).  The machine's python3 must hold torch; ttq_lib runs from the checkout.
# Overrides: PYTHON (the interpreter), RESULTS (instead of results/), ONLY (space-separated run-name patterns
# for --only, e.g. 'resnet20-* resnet56-*-s0').
# Steps and timings: README, "On a GPU".
set -Eeuo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: $0 PLAN BUDGET_MIN [JOBS]   (OUT must be set: where the results are packed)" >&2
  exit 2
fi
plan=$1; budget=$2; jobs=${3:-4}
: "${OUT:?set OUT to the folder that comes back (the device tool sets it)}"
py=${PYTHON:-python3}
results=${RESULTS:-results}
read -ra only <<<"${ONLY:-}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ ! -e ../shared ] && [ -d .device/shared ]; then
  # a copy, not a link: run folders record their inputs' real paths, and a link's target (.device/...) would
  # not match the plan's ../shared at home
  cp -r .device/shared ../shared
fi
name=$("$py" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["name"])' "$plan")  # no torch
status=0
"$py" -m ttq_lib.cli reproduce "$plan" --results "$results" --jobs "$jobs" --budget-min "$budget" \
  ${only[@]:+--only "${only[@]}"} 2>&1 | tee "$OUT/reproduce.log" \
  || status=$?
# Whatever happened, send back what the runs committed.
if [ -d "$results/$name" ]; then
  "$py" -m ttq_lib.cli reproduce "$plan" --results "$results" --export "$OUT" | tee -a "$OUT/reproduce.log"
fi
exit "$status"
