#!/usr/bin/env bash
# One call on a lent GPU machine: issue 12's GPU checks, each step capped and logged to $OUT/imagenet_gpu.log.
#
#   usage (on the GPU machine, in the checkout's root): OUT=DIR scripts/device_imagenet.sh [TRAIN_PER_CLASS]
#
#  1. ResNet-18 training throughput, FP against TTQ, fp32 NCHW and bf16 + channels_last (benchmarks/train_throughput.py)
#  2. an ImageNet-style folder made from the CIFAR-10 JPEGs of .device/shared (10 classes, upscaled to 400 px, about
#     the pixel count of an ImageNet photo), then `ttq train --dataset imagenet --model resnet18 --method ttq` for
#     2 epochs with JPEGs decoded by CPU workers, the same with --decode device, the same under torchrun with
#     --sync-bn (NCCL, one process), and `ttq eval` of the result.  Each run's history.jsonl goes into the log.
# STEPS (default all) picks steps by name: machine throughput folder train_decode_cpu train_decode_device
# train_torchrun_sync_bn eval.  Needs: python3 with torch and torchvision (PYTHON overrides), .device/shared/data/cifar10-jpeg.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device_common.sh  # device_setup, step, step_machine
device_setup imagenet
per_class=${1:-500}
step_machine
step throughput 200 "$py" benchmarks/train_throughput.py --devices cuda --models torchvision.resnet18 \
  --image-size 224 --classes 1000 --batch 256 --methods fp,ttq --variants eager,cl+bf16 --rounds 5 --steps 5
step folder 120 "$py" - "$tgz" "$work/folder" "$per_class" <<'PY'
import sys
from multiprocessing import Pool
from pathlib import Path
sys.path.insert(0, "tests")
from imagenet_folders import cifar_folder
tgz, root, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
with Pool(len(classes)) as pool:
    pool.starmap(cifar_folder, [(tgz, root, (c,), n, 100, 400) for c in classes])
jpegs = list(root.rglob("*.JPEG"))
print(f"{len(jpegs)} JPEGs, {sum(p.stat().st_size for p in jpegs) / len(jpegs) / 1024:.1f} KiB each on average")
PY
common=(--dataset imagenet --data "$work/folder" --model resnet18 --method ttq --epochs 2 --batch-size 256
        --precision bf16 --channels-last --workers 12 --device cuda)
history() { [ -f "$1/history.jsonl" ] && { echo "-- $1/history.jsonl"; cat "$1/history.jsonl"; } | tee -a "$log"; }
step train_decode_cpu 150 "$py" -m ttq_lib.cli train "${common[@]}" --out "$work/cpu"
history "$work/cpu"
step train_decode_device 150 "$py" -m ttq_lib.cli train "${common[@]}" --decode device --out "$work/device"
history "$work/device"
step train_torchrun_sync_bn 150 "$py" -m torch.distributed.run --standalone --nproc-per-node 1 -m ttq_lib.cli \
  train "${common[@]}" --sync-bn --out "$work/syncbn"
history "$work/syncbn"
step eval 90 "$py" -m ttq_lib.cli eval "$work/device/last.safetensors" --data "$work/folder" --workers 12 --json
