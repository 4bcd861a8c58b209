#!/usr/bin/env bash
# Regenerates fixtures/compile-proxy/*.json (partition + liveness) for the configs the
# pytorch-compile runtime is checked against. CPU only; nice'd because the box is shared.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../fixtures/compile-proxy"
py="${PYTHON:-/work/venv-torch/bin/python}"
mkdir -p "$out"
run() { local name="$1"; shift; echo "== $name"; nice -n 10 "$py" "$here/partition.py" --name "$name" --out "$out/$name.json" "$@"; }
tiny=(--n-layer 2 --n-head 2 --n-embd 64 --vocab 128 --block-size 32 --batch 2)
run tiny-bf16-flash "${tiny[@]}" --dtype bf16 --policy-check
run tiny-bf16-noflash "${tiny[@]}" --dtype bf16 --no-flash --policy-check
run tiny-fp32-flash "${tiny[@]}" --dtype fp32 --policy-check
run tiny-bf16-flash-dropout0.1 "${tiny[@]}" --dtype bf16 --dropout 0.1 --policy-check
run gpt2-124m-b64-bf16 --n-layer 12 --n-head 12 --n-embd 768 --vocab 50304 --block-size 1024 --batch 64 --dtype bf16 --policy-check
run shakespeare-char-b64-bf16 --n-layer 6 --n-head 6 --n-embd 384 --vocab 65 --block-size 256 --batch 64 --dropout 0.2 --dtype bf16 --policy-check
run gpt2-medium-b4-bf16 --n-layer 24 --n-head 16 --n-embd 1024 --vocab 50304 --block-size 1024 --batch 4 --dtype bf16
run gpt2-large-b4-bf16 --n-layer 36 --n-head 20 --n-embd 1280 --vocab 50304 --block-size 1024 --batch 4 --dtype bf16

# inductor's CUDA wrapper buffer plans (fake tensors, never executed) and one real CPU run
plan() { local name="$1"; shift; echo "== plan $name"; nice -n 10 "$py" "$here/inductor_buffers.py" --backend cuda --name "$name" --out "$out/$name.inductor-cuda.json" "$@"; }
if [ "${SKIP_PLANS:-0}" != 1 ]; then
  plan tiny-bf16-flash "${tiny[@]}" --dtype bf16
  plan tiny-bf16-noflash "${tiny[@]}" --dtype bf16 --no-flash
  plan tiny-fp32-flash "${tiny[@]}" --dtype fp32
  plan tiny-bf16-flash-dropout0.1 "${tiny[@]}" --dtype bf16 --dropout 0.1
  plan gpt2-124m-b64-bf16 --n-layer 12 --n-head 12 --n-embd 768 --vocab 50304 --block-size 1024 --batch 64 --dtype bf16
  echo "== cpu run tiny-bf16-flash"
  nice -n 10 "$py" "$here/inductor_buffers.py" --backend cpu --name tiny-bf16-flash "${tiny[@]}" --dtype bf16 --out "$out/tiny-bf16-flash.inductor-cpu.json"
fi
