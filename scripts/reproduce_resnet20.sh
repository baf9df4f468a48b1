#!/usr/bin/env bash
# The CPU reproduction of README's results table (ResNet-20 on the offline JPEG copy of CIFAR-10):
#  1. fine-tune the pretrained full-precision ResNet-20 on the JPEG train split (2 epochs),
#  2. fine-tune TTQ and TWN from that model with the same budget (12 epochs each, lr 0.02, side by side),
#  3. fine-tune TTQ again at the official learning rate 0.1.
# About 3 hours on 2 CPU cores.  Runs resume where they stopped: rerun the same command.
set -euo pipefail
cd "$(dirname "$0")/.."
ttq=${TTQ:-.venv/bin/ttq}
data=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
pretrained=${PRETRAINED:-../shared/pretrained/resnet20-12fca82f.th}
out=${OUT_DIR:-runs/cpu-resnet20}
epochs=${EPOCHS:-12}
run() {  # run DIR ARGS...: start, or resume a run that stopped, or skip a finished one
  local dir=$1; shift
  if [ -f "$dir/metrics.json" ]; then echo "$dir: done"; return; fi
  if [ -f "$dir/state.pt" ]; then "$ttq" train --resume "$dir"; else "$ttq" train "$@" --out "$dir"; fi
}
if [ -f "$pretrained" ]; then
  run "$out/fp" --model resnet20 --method fp --start-from "$pretrained" --data "$data" \
      --epochs 2 --lr 0.01 --schedule cosine --threads 2
  fp="$out/fp/last.safetensors"
else
  echo "no $pretrained: starting from the committed results/cpu-resnet20/fp/last.safetensors"
  fp=results/cpu-resnet20/fp/last.safetensors
fi
for method in ttq twn; do
  run "$out/$method" --model resnet20 --method "$method" --start-from "$fp" --data "$data" \
      --epochs "$epochs" --lr 0.02 --schedule cosine --threads 1 > "$out/$method.log" 2>&1 &
done
wait
run "$out/ttq-lr0.1" --model resnet20 --method ttq --start-from "$fp" --data "$data" \
    --epochs "$epochs" --lr 0.1 --schedule cosine --threads 2
for method in fp ttq twn ttq-lr0.1; do
  [ -f "$out/$method/metrics.json" ] && python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(sys.argv[2], m['test_accuracy'])" "$out/$method/metrics.json" "$method"
done
