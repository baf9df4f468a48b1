#!/usr/bin/env bash
# The paper's full CIFAR-10 schedule on one GPU: for ResNet-20/32/44/56, train the full-precision baseline
# from scratch, then fine-tune TTQ from it, both with the official recipe (SGD momentum 0.9, lr 0.1 /10 at
# epochs 82, 123, 150, batch 128, weight decay 2e-4, t = 0.05), on the original CIFAR-10 (torchvision
# download into data/).  Expected time on one H100: about 11 s per ResNet-20 epoch (measured), scaling with
# depth, so about 2 x 164 epochs x (11 + 17 + 24 + 30) s, roughly 7.5 hours for all eight runs.
# Offline, pass DATA=path/to/cifar-10-batches-py (or the JPEG tarball; then compare only within that copy).
# Each run logs to $OUT_DIR/<model>-<method>.log and the terminal.  A run that fails stops the script with a
# non-zero status naming the run and its log; Ctrl-C or TERM stops the run in progress.
# Overrides: TTQ (the ttq command), DATA, OUT_DIR, EPOCHS, MODELS.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. scripts/runs_lib.sh
ttq=${TTQ:-ttq}
data=${DATA:-download}
out=${OUT_DIR:-runs/paper}
epochs=${EPOCHS:-164}
mkdir -p "$out"
for model in ${MODELS:-resnet20 resnet32 resnet44 resnet56}; do
  for method in fp ttq; do
    dir="$out/$model-$method"
    log="$out/$model-$method.log"
    [ -f "$dir/metrics.json" ] && continue
    if [ -f "$dir/config.json" ]; then
      start_run "$dir" "$log" tee "$ttq" train --resume "$dir"
    else
      start=()
      [ "$method" = ttq ] && start=(--start-from "$out/$model-fp/last.safetensors")
      start_run "$dir" "$log" tee "$ttq" train --model "$model" --method "$method" "${start[@]}" --data "$data" \
          --epochs "$epochs" --device cuda --out "$dir"
    fi
    wait_runs
  done
done
