#!/usr/bin/env bash
# One call on a GPU machine: build fastrnn there, run the CUDA tests and the GPU benchmarks, and
# leave logs and JSON in $OUT (default: bench/results/gpu-<date>/) to be committed under
# bench/results/ with the device and versions they print.
#   bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results/gpu-$(date +%Y%m%d)}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nvcc --version | tail -1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"

# The GPU machines run their own torch; build against it, for Hopper (H100/H200) only.
FASTRNN_CUDA=ON FASTRNN_CUDA_ARCHITECTURES=90 \
  python3 -m pip install --no-build-isolation --no-deps -q . > "$out/build.log" 2>&1 \
  || { tail -50 "$out/build.log"; exit 1; }

# The floor under a persistent kernel's step: grid-barrier latency, alone and with an L2 exchange.
nvcc -std=c++17 -O3 -arch=sm_90 bench/kernels/grid_barrier_lab.cu -o "$out/grid_barrier_lab" \
  && "$out/grid_barrier_lab" 10000 | tee "$out/grid-barrier.txt"
rm -f "$out/grid_barrier_lab"

python3 -m pytest -q -k "cuda or CUDA" tests > "$out/tests-cuda.log" 2>&1
echo "CUDA tests: $(tail -1 "$out/tests-cuda.log")"
python3 bench/bench_ctc.py --device cuda --out "$out" > "$out/bench-ctc.log" 2>&1
tail -12 "$out/bench-ctc.log"
# RNNs against cuDNN: the two smallest GPU shapes, then the headline shape (B=16, H=768).
python3 bench/run.py --device cuda --quick --no-plot --out "$out/gpu-rnn-quick.json" \
  > "$out/bench-rnn-quick.log" 2>&1
tail -20 "$out/bench-rnn-quick.log"
python3 bench/run.py --device cuda --shapes '1024x16x768x768' --modes fwd,fwdbwd --no-packed \
  --no-proj --no-plot --out "$out/gpu-rnn-headline.json" > "$out/bench-rnn-headline.log" 2>&1
tail -12 "$out/bench-rnn-headline.log"
if command -v compute-sanitizer > /dev/null; then
  compute-sanitizer --tool memcheck python3 -m pytest -q -x \
    -k "cuda and (ctc or gradcheck or matches_cpu_backend)" tests > "$out/memcheck.log" 2>&1
  echo "memcheck: $(grep -E 'ERROR SUMMARY|passed|failed' "$out/memcheck.log" | tail -2 | tr '\n' ' ')"
fi
