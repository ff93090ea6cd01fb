#!/usr/bin/env bash
# VIP's setting on H100s: train with torchrun + FSDP2 and vLLM rollouts, then evaluate on AIME 2024/2025.
#
#   scripts/vip_h100.sh [1.5b|7b] [8q|16q] [GPUS]        e.g. scripts/vip_h100.sh 1.5b 8q 8
#
# 8q / 16q: a budget of 8 or 16 rollouts per prompt on average (C = 4,096 or 8,192 for 512
# prompts). Multi-node: run the same torchrun line on every node with --nnodes, --node-rank
# and --rdzv-backend c10d --rdzv-endpoint HOST:PORT (torchrun's rendezvous).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1.5b}; budget=${2:-8q}; gpus=${3:-8}
case "$size" in
  1.5b) model=Qwen/Qwen2.5-Math-1.5B ;;
  7b) model=Qwen/Qwen2.5-Math-7B ;;
  *) echo "size must be 1.5b or 7b" >&2; exit 2 ;;
esac
case "$budget" in
  8q) c=4096 ;;
  16q) c=8192 ;;
  *) echo "budget must be 8q or 16q" >&2; exit 2 ;;
esac
out=runs/vip_${size}_${budget}
torchrun --nproc_per_node "$gpus" trainer/run.py --config trainer/configs/vip_qwen2.5_math_1.5b.yaml \
  --set model="$model" --set budget="$c" --set output_dir="$out" \
  --set rollout_engine=vllm --set activation_checkpointing=true "${@:4}"
last=$(ls -d "$out"/checkpoints/step-* | sort -t- -k2 -n | tail -1)
python trainer/evaluate.py --config "$out/config.yaml" --checkpoint "$last" --set max_prompts=none \
  --dataset HuggingFaceH4/aime_2024 --split train --set prompt_column=problem --set answer_column=answer \
  --n 32 --k 1,8,32 --out "$out/aime24.json"
python trainer/evaluate.py --config "$out/config.yaml" --checkpoint "$last" --set max_prompts=none \
  --dataset test-time-compute/aime_2025 --split test --set prompt_column=question --set answer_column=answer \
  --n 32 --k 1,8,32 --out "$out/aime25.json"
