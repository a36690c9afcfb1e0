#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one short run (a lent GPU machine is billed per minute).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_checks.sh
#
# 1. tests/test_cuda.py and the runtime/benchmark tests with a GPU present;
# 2. the paper's FPS protocol (20 warm-up + 100 timed forwards, CUDA-synchronised) for the
#    PyTorch reference at each profile's test size: Cityscapes 1024x2048, DeepGlobe 1958x1958
#    and Inria 4000x4000 (both at 0.8 scale), with TF32 at PyTorch's default (cuDNN on).
# Logs and JSON go to $OUT. Runs from the repository root without installing the package.
set -u -o pipefail
OUT=${OUT:-/tmp/isdnet-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'| onnxruntime', o.__version__, o.get_available_providers())" | tee -a "$OUT/gpu.txt"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_benchmark_protocol.py \
    tests/test_benchmark_cli.py 2>&1 | tee "$OUT/pytest.txt" | tail -n 25
for spec in cityscapes:1024x2048 deepglobe:1958x1958 inria:4000x4000; do
    profile=${spec%%:*} size=${spec#*:}
    $PY -m isdnet_deploy benchmark --device cuda --profile "$profile" --size "$size" \
        --json "$OUT/fps_${profile}.json" 2>&1 | tr '\r' '\n' | grep -v '%|' \
        | tee "$OUT/fps_${profile}.txt"
done
