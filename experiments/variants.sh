#!/usr/bin/env bash
# The README's variants table: every --model on the built-in shapes data with
# the same budget (the shapes preset: 10 epochs x 500 steps = 5,000 steps of
# batch 64), each evaluated on the same 2,560 test images (40 batches) with
# IWAE K=100 (no per-run figures), then one comparison table and its figures
# (evaluate.py --compare, model column).
#
#   bash experiments/variants.sh                  # all models, runs/variants/<model>
#   bash experiments/variants.sh vae iwae         # some of them
#   OUT=/tmp/v bash experiments/variants.sh       # elsewhere
#   TRAIN_ONLY=1 bash experiments/variants.sh     # train, evaluate later
#
# A finished run (train_summary.json written) is not trained again, and an
# interrupted one resumes where it stopped: rerun the script after a stop.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/variants}
MODELS=("$@")
if [ ${#MODELS[@]} -eq 0 ]; then MODELS=(vae ae iwae beta_tcvae iaf cvae); fi
mkdir -p "$OUT"
for model in "${MODELS[@]}"; do
  extra=()
  if [ "$model" = cvae ]; then extra=(--condition=shape); fi
  if [ ! -f "$OUT/$model/train_summary.json" ]; then
    start=$(date +%s)
    python train.py --dataset=shapes --model="$model" "${extra[@]}" --seed=0 \
      --workdir="$OUT/$model" > "$OUT/$model.train.log" 2>&1
    echo "$model train $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
  fi
  if [ -n "${TRAIN_ONLY:-}" ]; then continue; fi
  start=$(date +%s)
  python evaluate.py --workdir="$OUT/$model" --max_batches=40 --iwae_samples=100 --nofigures \
    --nodisentanglement \
    > "$OUT/$model.eval.log" 2>&1
  echo "$model evaluate $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
done
if [ -n "${TRAIN_ONLY:-}" ]; then exit 0; fi
runs=()
for model in vae ae iwae beta_tcvae iaf cvae; do
  if [ -f "$OUT/$model/results.json" ]; then runs+=("$OUT/$model"); fi
done
python evaluate.py --compare "${runs[@]}" --output="$OUT/compare" > "$OUT/compare.log" 2>&1
tail -n 30 "$OUT/compare.log"
