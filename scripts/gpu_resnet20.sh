#!/usr/bin/env bash
# ResNet-20 reproduction on one GPU with the offline JPEG copy of CIFAR-10, inside a time budget:
# fine-tune the pretrained full-precision model on the JPEG train split, then fine-tune TTQ and TWN from it
# (both at once on the same GPU), with as many epochs as the budget allows.
# Each run logs to OUT_DIR/<run>.log (fp also on the terminal).  A run that fails stops the script with a
# non-zero status naming the run and its log; Ctrl-C or TERM stops the runs it started.
# Usage: scripts/gpu_resnet20.sh DATA_TGZ PRETRAINED_TH OUT_DIR [BUDGET_S]
# Overrides: PYTHON (the interpreter), FP_EPOCHS, MIN_EPOCHS.
set -Eeuo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/runs_lib.sh"
if [ $# -lt 3 ]; then
  echo "usage: $0 DATA_TGZ PRETRAINED_TH OUT_DIR [BUDGET_S]" >&2
  exit 2
fi
data=$1; init=$2; out=$3; budget=${4:-420}
py=${PYTHON:-python3}
start=$(date +%s)
fp_epochs=${FP_EPOCHS:-10}
mkdir -p "$out"
start_run "$out/fp" "$out/fp.log" tee $py -m ttq_lib.cli train --model resnet20 --method fp --start-from "$init" \
    --data "$data" --epochs "$fp_epochs" --lr 0.02 --schedule cosine --out "$out/fp"
wait_runs
per_epoch=$($py -c "import json,sys; h=[json.loads(l) for l in open(sys.argv[1])]; print(h[-1]['wall_time_s']/len(h))" "$out/fp/history.jsonl")
left=$(( budget - ($(date +%s) - start) ))
# two runs share the GPU: allow 1.6x the single-run epoch time
epochs=$($py -c "import sys; print(max(int(sys.argv[3]), min(150, int(float(sys.argv[1]) / (1.6 * float(sys.argv[2]))))))" "$left" "$per_epoch" "${MIN_EPOCHS:-5}")
echo "fp epoch ${per_epoch}s; ${left}s left: ${epochs} epochs each for TTQ and TWN"
for method in ttq twn; do
  start_run "$out/$method" "$out/$method.log" quiet $py -m ttq_lib.cli train --model resnet20 --method "$method" \
      --start-from "$out/fp/last.safetensors" --data "$data" --epochs "$epochs" --lr 0.05 --schedule cosine \
      --out "$out/$method"
done
wait_runs
tail -n 3 "$out/ttq.log" "$out/twn.log"
