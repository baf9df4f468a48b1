#!/usr/bin/env bash
# The paper's full CIFAR-10 schedule on one GPU: for ResNet-20/32/44/56, train the full-precision baseline
# from scratch, then fine-tune TTQ from it, both with the official recipe (SGD momentum 0.9, lr 0.1 /10 at
# epochs 82, 123, 150, batch 128, weight decay 2e-4, t = 0.05), on the original CIFAR-10 (torchvision
# download into data/).  Expected time on one H100: about 11 s per ResNet-20 epoch (measured), scaling with
# depth, so about 2 x 164 epochs x (11 + 17 + 24 + 30) s, roughly 7.5 hours for all eight runs.
# Offline, pass DATA=path/to/cifar-10-batches-py (or the JPEG tarball; then compare only within that copy).
set -euo pipefail
cd "$(dirname "$0")/.."
ttq=${TTQ:-ttq}
data=${DATA:-download}
out=${OUT_DIR:-runs/paper}
epochs=${EPOCHS:-164}
for model in ${MODELS:-resnet20 resnet32 resnet44 resnet56}; do
  for method in fp ttq; do
    dir="$out/$model-$method"
    [ -f "$dir/metrics.json" ] && continue
    if [ -f "$dir/state.pt" ]; then "$ttq" train --resume "$dir"; continue; fi
    init=()
    [ "$method" = ttq ] && init=(--start-from "$out/$model-fp/last.safetensors")
    "$ttq" train --model "$model" --method "$method" "${init[@]}" --data "$data" --epochs "$epochs" \
        --device cuda --out "$dir"
  done
done
