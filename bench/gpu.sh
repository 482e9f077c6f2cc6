#!/usr/bin/env bash
# GPU pretraining benchmark (issue 24): throughput and MFU of the 26M and 104M presets through
# lmforge's real pretrain path, with compile / Liger on and off and flash-attn when it imports, plus
# the MiniMind-style padded baseline; ~10 minutes on one H200. The driver and the MFU formula are in
# bench/gpu.py (its docstring); bench/README.md says how to record the figures.
#
#   bash bench/gpu.sh             # on a CUDA GPU
#   bash bench/gpu.sh --dry_run   # same configurations on the CPU, tiny model, 3 steps (~1-2 min)
#
# Environment: PYTHON (default: python3), PEAK_FLOPS (default 989e12, H200 dense bf16).
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$(dirname "$bench")${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$bench/gpu.py" "$@"
