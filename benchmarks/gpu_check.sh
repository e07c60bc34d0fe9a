#!/usr/bin/env bash
# GPU check of keras_meta (DESIGN.md §10), runnable in under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh            # uses $PYTHON, else .venv/bin/python, else python3
#
# 1. Preflight (seconds): TensorFlow importable, built with CUDA, a GPU visible, keras_meta
#    (and its compiled extension, built per Python version) importable. Exits 3 if not:
#    the lent GPU machines have no TensorFlow installed and reach no registry, and a
#    TensorFlow with its CUDA libraries is far larger than what a device call carries
#    (64 MiB), so there the check stops here, saying why.
# 2. Supervised (benchmarks/gpu_check.py supervised + placement, <= 5 min): for the sinusoid MLP (1 and 5
#    inner steps) and the conv4 max-pool net, second-order MAML as a README reader sets it
#    up: the mode "auto" picks, first-call time, meta-steps/s, peak GPU memory, and the
#    placement of the compiled train function's ops (every CPU-placed op type listed).
# 3. Meta-RL: appended by the RL work (marked section below).
set -u
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1

echo "== preflight"
timeout 120 "$PYTHON" benchmarks/gpu_check.py preflight
status=$?
if [ $status -ne 0 ]; then
  echo "gpu_check: preflight failed (exit $status): TensorFlow with CUDA cannot run keras_meta here; nothing measured."
  exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

echo "== in-graph samplers vs C++ (bits, XLA on the GPU)"
timeout 60 "$PYTHON" benchmarks/gpu_check.py sampler || echo "gpu_check: sampler check failed (exit $?)"

echo "== supervised (sinusoid-1, sinusoid-5, conv-pool; second order; default path)"
timeout 200 "$PYTHON" benchmarks/gpu_check.py supervised || echo "gpu_check: supervised part failed or timed out (exit $?)"
echo "== placement of the first fit call's ops (device-placement log, counted)"
timeout 100 "$PYTHON" benchmarks/gpu_check.py placement || echo "gpu_check: placement part failed or timed out (exit $?)"

# ===== RL section (owned by the meta-RL work): append below this line, <= 4 minutes =====
echo "== meta-RL: placement of the compiled MAML-RL meta-iteration, navigation meta-iterations/s in-graph vs host"
rl_log=$(mktemp)
timeout 240 "$PYTHON" benchmarks/maml_rl.py --gpu-check --iterations 3 >"$rl_log" 2>&1 \
  || echo "gpu_check: RL part failed or timed out (exit $?)"
# TensorFlow's device-placement log ("name: (OpType): /job:.../device:X:N", on stdout) is
# counted per device; every other line is shown.
grep -v '): /job:' "$rl_log" | grep -v '^[IW]0000' | tail -30
echo "placement log lines per device: $(grep '): /job:' "$rl_log" | grep -o 'device:[A-Z]*:[0-9]*' | sort | uniq -c | tr '\n' ' ')"
echo "CPU-placed op types in the placement log: $(grep '): /job:.*device:CPU' "$rl_log" | sed 's/.*: (\([A-Za-z0-9_]*\)): .*/\1/' | sort | uniq -c | sort -rn | head -15 | tr '\n' ' ')"
rm -f "$rl_log"
