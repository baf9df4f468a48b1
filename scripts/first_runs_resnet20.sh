#!/usr/bin/env bash
# The first single runs, before the reproduction plan (results/cpu-resnet20/, README "ResNet-20: the first single
# runs"; the main job, scripts/reproduce_resnet20.sh, runs the plan instead), on the offline JPEG copy of CIFAR-10:
#  1. fine-tune the pretrained full-precision ResNet-20 on the JPEG train split (2 epochs),
#  2. fine-tune TTQ and TWN from that model with the same budget (12 epochs each, lr 0.02, side by side),
#  3. fine-tune TTQ again at the official learning rate 0.1.
# About 2 hours on 2 CPU cores.  Runs resume where they stopped: rerun the same command.
# Each run logs to $OUT_DIR/<run>.log (fp and ttq-lr0.1 also on the terminal).  A run that fails stops the
# script with a non-zero status naming the run and its log; Ctrl-C or TERM stops the runs it started.
# Overrides: TTQ (the ttq command), DATA, PRETRAINED, OUT_DIR, EPOCHS.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. scripts/runs_lib.sh
ttq=${TTQ:-.venv/bin/ttq}
data=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
pretrained=${PRETRAINED:-../shared/pretrained/resnet20-12fca82f.th}
out=${OUT_DIR:-runs/cpu-resnet20}
epochs=${EPOCHS:-12}
mkdir -p "$out"  # the logs live here, also when no run creates it (fallback start below)
run() {  # run NAME tee|quiet ARGS...: start $out/NAME, or resume it if it stopped; skip it if finished
  local name=$1 show=$2 dir="$out/$1"
  shift 2
  if [ -f "$dir/metrics.json" ]; then echo "$dir: done"; return; fi
  if [ -f "$dir/config.json" ]; then
    start_run "$dir" "$out/$name.log" "$show" "$ttq" train --resume "$dir"
  else
    start_run "$dir" "$out/$name.log" "$show" "$ttq" train "$@" --out "$dir"
  fi
}
if [ -f "$pretrained" ]; then
  run fp tee --model resnet20 --method fp --start-from "$pretrained" --data "$data" \
      --epochs 2 --lr 0.01 --schedule cosine --threads 2
  wait_runs
  fp="$out/fp/last.safetensors"
else
  fp=results/cpu-resnet20/fp/last.safetensors
  echo "no $pretrained: starting from the committed $fp"
  if [ ! -f "$fp" ]; then
    echo "$0: $fp is missing too: set PRETRAINED to a pretrained resnet20-*.th" >&2
    exit 1
  fi
fi
for method in ttq twn; do
  run "$method" quiet --model resnet20 --method "$method" --start-from "$fp" --data "$data" \
      --epochs "$epochs" --lr 0.02 --schedule cosine --threads 1
done
wait_runs
run ttq-lr0.1 tee --model resnet20 --method ttq --start-from "$fp" --data "$data" \
    --epochs "$epochs" --lr 0.1 --schedule cosine --threads 2
wait_runs
for method in fp ttq twn ttq-lr0.1; do
  if [ -f "$out/$method/metrics.json" ]; then
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], m['test_accuracy'])" \
        "$out/$method/metrics.json" "$method"
  fi
done
