#!/bin/bash
# Train the hard-hat and workwear detectors on one CUDA GPU: four runs at once (each task with
# and without mosaic) sharing the GPU and the CPU cores, each given BUDGET_S seconds
# (train_yolo --budget-s), then each task's best run written as a float16 EMA checkpoint
# (train_yolo slim, ~17 MB) split into 15 MB pieces for transfer tools with a per-file limit
# (join them with `cat NAME.pt.* > NAME.pt`).
#
# usage: tools/gpu_train.sh PACK_DIR OUT_DIR [BUDGET_S]
#   PACK_DIR holds hardhat/, workwear/, vest/ (python -m tools.pack_dataset ...) and coco32/
#   (python -m tools.coco_fp16 unpack ...); see models/MODEL_CARD.md. Run from the repository
#   root with a python3 that has torch (CUDA), cv2, yaml and tqdm.
# Hard-hat runs use the shipped hard-hat loss weights (--loss-cls 0.3 --loss-obj-pos 1.0),
# workwear runs the defaults; warm-up is three epochs (batch 16: 177 / 348 iterations).
# Environment: DEVICE (default cuda), EXTRA (options appended to every train command, e.g. a
# CPU smoke run: DEVICE=cpu EXTRA="--size 64 --warmup-iters 2 --max-iters 1").
set -u
if [ $# -lt 2 ]; then sed -n '2,15p' "$0"; exit 2; fi
P=$(realpath "$1"); OUT=$2; B=${3:-450}
for d in hardhat workwear vest coco32; do
  [ -d "$P/$d" ] || { echo "gpu_train: $P/$d is missing" >&2; exit 2; }
done
mkdir -p "$OUT"
RUNS=$(mktemp -d)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
common="--coco-dir $P/coco32 --device ${DEVICE:-cuda} --workers 3 --threads 1 --epochs 1000 --budget-s $B --runs $RUNS"
hh="--data $P/hardhat --size 512 --warmup-iters 177 --loss-cls 0.3 --loss-obj-pos 1.0"
ww="--data $P/workwear --data $P/vest --size 416 --warmup-iters 348"
run() { n=$1; shift; timeout $((B + 90)) python3 -m tools.train_yolo train --name "$n" $common "$@" ${EXTRA:-} > "$RUNS/$n.out" 2>&1 & }
run hh_m $hh --mosaic 0.5
run hh $hh
run ww_m $ww --mosaic 0.5
run ww $ww
wait
rc=0
for task in hh ww; do
  python3 -m tools.train_yolo slim --ckpt "$RUNS/${task}_m/best.pt" --ckpt "$RUNS/$task/best.pt" \
    --out "$RUNS/${task}_best.pt" || rc=1
  [ -f "$RUNS/${task}_best.pt" ] && split -b 15000000 -d "$RUNS/${task}_best.pt" "$OUT/${task}_best.pt."
done
tar czf "$OUT/logs.tar.gz" -C "$RUNS" $(cd "$RUNS" && ls -d *.out */train.log 2>/dev/null)
grep -h "budget-s\|new best" "$RUNS"/*/train.log | tail -n 8
exit $rc
