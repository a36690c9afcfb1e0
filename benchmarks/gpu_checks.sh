#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (a lent GPU machine is billed per minute).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_checks.sh
#   OUT=/tmp/gpu CHECKPOINT=isdnet_synthetic_deepglobe.pth SIZES=deepglobe:1958x1958 \
#       bash benchmarks/gpu_checks.sh          # a trained checkpoint at hand, one size
#
# 1. tests/test_cuda.py (the optimised torch paths included) and the runtime/benchmark tests
#    with a GPU present;
# 2. the paper's FPS protocol (20 warm-up + 100 timed forwards, CUDA-synchronised, re-warm
#    rule) plus interleaved rounds at each profile's test size (Cityscapes 1024x2048,
#    DeepGlobe 1958x1958, Inria 4000x4000; random weights, TF32 at PyTorch's default) for
#    the PyTorch reference (eager fp32, the baseline) and $VARIANTS: eager fp16, eager
#    channels-last, compiled fp16 / bf16 with CUDA graphs, compiled fp16 channels-last
#    with CUDA graphs. Compilation and graph capture run before timing; their time is the
#    'compile s' column;
# 3. parity of every variant with eager fp32 through the one comparator (isdnet-deploy
#    compare --torch-variant): max |logit diff|, argmax agreement, agreement on decided
#    pixels, on held-out synthetic DeepGlobe-like images seen at 1958x1958, with an ISDNet
#    trained on that task ($CHECKPOINT; without it, one is trained first: about 2 minutes
#    on an H200). The goal: an optimised path >= 3x eager fp32 at 1958x1958 with >= 99.5 %
#    argmax agreement;
# 4. benchmarks/gpu_table.py writes $OUT/gpu_table.md, the table the README shows.
# Every variant compiles once per size (inductor, about a minute each on a GPU; its on-disk
# cache makes the parity run's compilations at 1958x1958 quick). Runs from the repository
# root without installing the package.
set -u -o pipefail
OUT=${OUT:-/tmp/isdnet-gpu}
SIZES=${SIZES:-"cityscapes:1024x2048 deepglobe:1958x1958 inria:4000x4000"}
VARIANTS=${VARIANTS:-"precision=fp16 channels_last compile=inductor,precision=fp16,cuda_graphs \
compile=inductor,precision=bf16,cuda_graphs \
compile=inductor,precision=fp16,channels_last,cuda_graphs"}
CHECKPOINT=${CHECKPOINT:-}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
variant_args=()
for variant in $VARIANTS; do variant_args+=(--torch-variant "$variant"); done

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
    | tee -a "$OUT/gpu.txt"
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_benchmark_protocol.py \
    tests/test_benchmark_cli.py 2>&1 | tee "$OUT/pytest.txt" | tail -n 25

for spec in $SIZES; do
    profile=${spec%%:*} size=${spec#*:}
    $PY -m isdnet_deploy benchmark --device cuda --profile "$profile" --size "$size" \
        --interleave "${variant_args[@]}" --json "$OUT/fps_${profile}.json" 2>&1 \
        | tr '\r' '\n' | grep -v '%|' | tee "$OUT/fps_${profile}.txt"
done

if [ -z "$CHECKPOINT" ]; then
    CHECKPOINT=$OUT/isdnet_synthetic_deepglobe.pth
    [ -f "$CHECKPOINT" ] || $PY benchmarks/train_synthetic.py -o "$CHECKPOINT" --device cuda \
        --steps 3000 --batch 8 --crop 384 --pool 96 --pool-size 768 --val-size 1024 2>&1 \
        | tr '\r' '\n' | grep -v '%|' | tee "$OUT/train.txt"
fi
# Seed 20000: images the training pool (seed 0) and its validation (10000) never drew;
# 2448x2448 is DeepGlobe's own size, which the test scale (0.8) brings to 1958x1958.
$PY -m isdnet_deploy samples -o "$OUT/heldout" --profile deepglobe --count 3 \
    --size 2448x2448 --seed 20000
$PY -m isdnet_deploy compare "$CHECKPOINT" --device cuda --images "$OUT/heldout" \
    --labels "$OUT/heldout" "${variant_args[@]}" --json "$OUT/parity_deepglobe.json" 2>&1 \
    | tr '\r' '\n' | grep -v '%|' | tee "$OUT/parity_deepglobe.txt"

$PY benchmarks/gpu_table.py "$OUT" -o "$OUT/gpu_table.md" && cat "$OUT/gpu_table.md"
