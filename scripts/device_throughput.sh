#!/usr/bin/env bash
# One call on a lent GPU machine: the throughput figures issues 10 and 12 still lack, logged to $OUT/throughput_gpu.log.
#
#   usage (on the GPU machine, in the checkout's root): OUT=DIR scripts/device_throughput.sh
#
#  epoch    `ttq train` of ResNet-20 TTQ on the JPEG copy of CIFAR-10, 2 epochs, bf16 + channels_last, then the same
#           with --compile-mode reduce-overhead (torch.compile with CUDA graphs): issue 10's epoch time, read from
#           history.jsonl's train_time_s (the epoch's 391 steps with data and augmentation on the GPU, no
#           evaluation; target 2.5 s), the second epoch being past compilation and cuDNN's kernel choice
#  share    4 such trainings (eager) at once, 1 epoch each, against epoch 1 of the first `epoch` run alone: issue
#           10's "several runs sharing one card at a higher total throughput than one alone"
#  cifar    benchmarks/train_throughput.py: ResNet-20 TTQ and FP (batch 128), channels_last, + bf16, + compile with
#           CUDA graphs, as ratios to eager fp32 NCHW (TTQ's block prints first)
#  r18      the same for ResNet-18 (224 px, batch 256) FP and TTQ, bf16 + channels_last and + compile with CUDA
#           graphs: issue 12's target, TTQ within 10 % of FP
# Issue 10's steps come first: a call cut short still brings them back.  The limits add up to 560 s (one call
# may run 600); STEPS (default all) picks steps by name: machine epoch share cifar r18 (e.g. STEPS="machine
# r18" for issue 12 alone).  Needs: python3 with torch (PYTHON overrides), .device/shared/data/cifar10-jpeg.tar.gz
# (carried).  Each step's output, exit status and seconds go to $OUT/throughput_gpu.log as it finishes.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device_common.sh  # device_setup, step, step_machine
device_setup throughput
step_machine
train=(-m ttq_lib.cli train --model resnet20 --method ttq --data "$tgz" --device cuda --precision bf16 --channels-last
       --batch-size 128)
history() { for d in "$@"; do [ -f "$d/history.jsonl" ] && "$py" -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(sys.argv[1], "epoch", r["epoch"], *(f"{k} {r[k]:.2f}" for k in ("train_time_s", "eval_time_s") if k in r),
          "test_acc", r.get("test_acc"))
' "$d/history.jsonl" | tee -a "$log"; done; }
step epoch 170 bash -c "$py ${train[*]} --epochs 2 --out $work/bf16-cl --overwrite && $py ${train[*]} --epochs 2 --compile-mode reduce-overhead --out $work/bf16-cl-graphs --overwrite"
history "$work/bf16-cl" "$work/bf16-cl-graphs"
step share 100 bash -c "for i in 1 2 3 4; do $py ${train[*]} --epochs 1 --seed \$i --out $work/share-\$i --overwrite & done; wait"
history "$work"/share-*
step cifar 100 "$py" benchmarks/train_throughput.py --devices cuda --models resnet20 --methods ttq,fp \
  --variants cl,cl+bf16,all+cg --rounds 5 --steps 10
step r18 130 "$py" benchmarks/train_throughput.py --devices cuda --models torchvision.resnet18 --image-size 224 \
  --classes 1000 --batch 256 --methods fp,ttq --variants cl+bf16,all+cg --rounds 5 --steps 5
