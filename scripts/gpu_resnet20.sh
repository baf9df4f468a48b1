#!/usr/bin/env bash
# ResNet-20 reproduction on one GPU with the offline JPEG copy of CIFAR-10, inside a time budget:
# fine-tune the pretrained full-precision model on the JPEG train split, then fine-tune TTQ and TWN from it
# (both at once on the same GPU), with as many epochs as the budget allows.
# Usage: scripts/gpu_resnet20.sh DATA_TGZ PRETRAINED_TH OUT_DIR [BUDGET_S]
set -euo pipefail
data=$1; init=$2; out=$3; budget=${4:-420}
py=${PYTHON:-python3}
start=$(date +%s)
fp_epochs=${FP_EPOCHS:-10}
$py -m ttq_lib.cli train --model resnet20 --method fp --start-from "$init" --data "$data" \
    --epochs "$fp_epochs" --lr 0.02 --schedule cosine --out "$out/fp"
per_epoch=$($py -c "import json,sys; h=[json.loads(l) for l in open(sys.argv[1])]; print(h[-1]['wall_time_s']/len(h))" "$out/fp/history.jsonl")
left=$(( budget - ($(date +%s) - start) ))
# two runs share the GPU: allow 1.6x the single-run epoch time
epochs=$($py -c "import sys; print(max(int(sys.argv[3]), min(150, int(float(sys.argv[1]) / (1.6 * float(sys.argv[2]))))))" "$left" "$per_epoch" "${MIN_EPOCHS:-5}")
echo "fp epoch ${per_epoch}s; ${left}s left: ${epochs} epochs each for TTQ and TWN"
for method in ttq twn; do
  $py -m ttq_lib.cli train --model resnet20 --method "$method" --start-from "$out/fp/last.safetensors" \
      --data "$data" --epochs "$epochs" --lr 0.05 --schedule cosine --out "$out/$method" > "$out/$method.log" 2>&1 &
done
wait
tail -n 3 "$out/ttq.log" "$out/twn.log"
