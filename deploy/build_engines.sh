#!/usr/bin/env bash
# Build and cache the engines of a model on the microscope PC, ahead of a session, so that the
# first frame does not wait for an export or a TensorRT build.
#
# usage: build_engines.sh MODEL HEIGHT WIDTH [MAX_BATCH]
#   MODEL        a bundle path (.json/.safetensors) or a bundled model's name
#   HEIGHT WIDTH the frame size the engine sees: the camera's frame size times
#                (frame sampling / model sampling), e.g. 1024 x 1024 at 0.06 Å/px for a model
#                trained at 0.12 Å/px gives 512 512
#   MAX_BATCH    largest batch of the TensorRT plan (default 8; match [engine] options.max_batch)
#
# Environment: ETEM (the etem command, default: etem on PATH), ETEM_CACHE_DIR (the cache the
# service uses; default: the user cache folder of whoever runs this), INT8=1 (also build the
# onnxruntime engine's int8 graph).
set -euo pipefail

if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then
    sed -n '5,14p' "$0" >&2
    exit 2
fi
model=$1 height=$2 width=$3 batch=${4:-8}
etem=${ETEM:-etem}
python="$(dirname "$(command -v "$etem")")/python"
[ -x "$python" ] || python=python3

has() { "$python" -c "$1" >/dev/null 2>&1; }

echo "== onnxruntime (CPU)"
if has "import onnxruntime"; then
    "$etem" engine build "$model" --engine onnxruntime --shape "$height" "$width" --device cpu
    # the int8 graph too, where the model has calibration images (the bundled ones do) and
    # INT8=1 (for `--int8` / [engine] options = { int8 = true } on CPUs with VNNI)
    if [ "${INT8:-0}" = 1 ]; then
        echo "== onnxruntime int8 (CPU)"
        "$etem" engine build "$model" --engine onnxruntime --int8 --shape "$height" "$width" --device cpu
    fi
else
    echo "   skipped: pip install onnx onnxruntime"
fi

if has "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "== tensorrt (CUDA, fp16, batches 1-$batch)"
    if has "import tensorrt"; then
        "$etem" engine build "$model" --engine tensorrt --shape "$height" "$width" --batch "$batch" --device cuda
    else
        echo "   skipped: TensorRT is not installed (pip install tensorrt)"
        echo "== compiled (CUDA, torch.export + AOTInductor; takes minutes)"
        "$etem" engine build "$model" --engine compiled --shape "$height" "$width" --device cuda
    fi
else
    echo "== no CUDA GPU: the tracker will run onnxruntime (or eager) on the CPU"
fi

echo "== cached engines"
"$etem" engine list
