#!/usr/bin/env bash
# CTPO's setting (single-turn) on H100s: Qwen3-4B-Base, 8 responses per prompt, CTPO's clip.
#
#   scripts/ctpo_h100.sh [GPUS] [LOSS]        e.g. scripts/ctpo_h100.sh 8 ctpo   (or grpo, gspo for the baselines)
set -euo pipefail
cd "$(dirname "$0")/.."
gpus=${1:-8}; loss=${2:-ctpo}
case "$loss" in
  ctpo) clip=(--set clip_low=0.025 --set clip_high=0.05) ;;
  grpo|gspo) clip=(--set clip_low=none --set clip_high=none) ;;  # each loss's published range
  *) echo "loss must be ctpo, grpo or gspo" >&2; exit 2 ;;
esac
torchrun --nproc_per_node "$gpus" trainer/run.py --config trainer/configs/ctpo_qwen3_4b.yaml \
  --set loss="$loss" "${clip[@]}" --set output_dir=runs/ctpo_qwen3_4b_"$loss" \
  --set rollout_engine=vllm --set activation_checkpointing=true "${@:3}"
