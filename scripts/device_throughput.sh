#!/usr/bin/env bash
# One call on a lent GPU machine: the throughput figures issues 10 and 12 still lack, logged to $OUT/throughput_gpu.log.
#
#   usage (on the GPU machine, in the checkout's root): OUT=DIR scripts/device_throughput.sh
#
#  r18      ResNet-18 (224 px, batch 256) FP against TTQ: fp32 NCHW, bf16 + channels_last, and those with
#           torch.compile (variant `all`) and with CUDA graphs as well (`all+cg`): issue 12's target, TTQ within
#           10 % of FP
#  cifar    ResNet-20 and ResNet-56 (batch 128) FP and TTQ: channels_last, + bf16, + compile, + CUDA graphs; the
#           ms/step times the 391 steps of an epoch is issue 10's compute-only epoch time (target 2.5 s for
#           ResNet-20 TTQ)
#  epoch    `ttq train` of ResNet-20 TTQ on the JPEG copy of CIFAR-10, 2 epochs, bf16 + channels_last, then the same
#           with --compile, then with --compile-mode reduce-overhead: the real epoch time, data and augmentation
#           on the GPU (history.jsonl's wall_time_s, evaluation of the 10,000 test images included)
#  share    4 such trainings at once, 1 epoch each, against epoch 1 of the first `epoch` run alone: issue 10's
#           "several runs sharing one card at a higher total throughput than one alone"
# STEPS (default all) picks steps by name: machine r18 cifar epoch share.  Needs: python3 with torch (PYTHON
# overrides), .device/shared/data/cifar10-jpeg.tar.gz (carried).  About 10 minutes in all on an H100 (estimated:
# compile time dominates r18 and cifar); split it across calls with STEPS (e.g. STEPS="machine r18 cifar", then
# STEPS="epoch share") if a call has less.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device_common.sh  # device_setup, step, step_machine
device_setup throughput
step_machine
step r18 300 "$py" benchmarks/train_throughput.py --devices cuda --models torchvision.resnet18 --image-size 224 \
  --classes 1000 --batch 256 --methods fp,ttq --variants eager,cl+bf16,all,all+cg --rounds 5 --steps 5
step cifar 270 "$py" benchmarks/train_throughput.py --devices cuda --models resnet20,resnet56 --methods fp,ttq \
  --variants cl,cl+bf16,all,all+cg --rounds 5 --steps 10
train=(-m ttq_lib.cli train --model resnet20 --method ttq --data "$tgz" --device cuda --precision bf16 --channels-last
       --batch-size 128)
history() { for d in "$@"; do [ -f "$d/history.jsonl" ] && "$py" -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(sys.argv[1], "epoch", r["epoch"], "wall_time_s", round(r["wall_time_s"], 2), "test_acc", r.get("test_acc"))
' "$d/history.jsonl" | tee -a "$log"; done; }
step epoch 210 bash -c "$py ${train[*]} --epochs 2 --out $work/bf16-cl --overwrite && $py ${train[*]} --epochs 2 --compile --out $work/bf16-cl-compile --overwrite && $py ${train[*]} --epochs 2 --compile-mode reduce-overhead --out $work/bf16-cl-graphs --overwrite"
history "$work/bf16-cl" "$work/bf16-cl-compile" "$work/bf16-cl-graphs"
step share 150 bash -c "for i in 1 2 3 4; do $py ${train[*]} --epochs 1 --seed \$i --out $work/share-\$i --overwrite & done; wait"
history "$work"/share-*
