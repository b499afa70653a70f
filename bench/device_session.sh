#!/usr/bin/env bash
# Every GPU check of the project in one run on a GPU machine, at most about 8 minutes on one
# H100/H200: the GPU tests, then the optics, engine, MSD-net and pipeline benchmarks, each under
# its own time limit (they add up to 485 s; `train` to under 10 minutes). Each step's log goes to WORK (default /tmp/etem-device); OUT (default
# ./device-out) gets session.md, which gathers every step's tables and how it ended, and (train)
# the model bundle and its held-out table and plot: at most 8 files, as a GPU machine's
# tooling may allow no more to come back.
#
#   bash bench/device_wheels.sh .whl              # here, once: the packages that machine lacks
#   bash bench/device_session.sh [checks|train]   # there, from the repository root, with .whl
#
# `train` instead computes the Au exit waves there (abTEM on the machine's CPU cores) and trains
# the Au HRTEM model on the GPU for TRAIN_MINUTES (default 4), then scores it on a held-out set;
# the bundle and its tables land in OUT. SMOKE=1 shrinks every step to seconds (to try the
# script on a CPU machine: DEVICE=cpu SMOKE=1).
set -uo pipefail
WHAT=${1:-checks}
OUT=${OUT:-./device-out}
WORK=${WORK:-/tmp/etem-device}
ETEM="python3 -m etem.tracker.cli"
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1

if [ -d .whl ] && ! python3 -c "import zmq, trackpy, abtem" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! python3 -c "import etem.tracker" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$WORK/install.log" 2>&1 \
    || { cat "$WORK/install.log"; echo "installing the package failed"; exit 1; }
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its output, say how it ended
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.txt" 2>&1
  local rc=$?
  printf '\n## %s (exit %s, %s s)\n\n`%s`\n\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >> "$OUT/session.md"
  grep -E '^(\||#|[0-9]+ (passed|failed|skipped)|FAILED|ERROR|method|[a-z].* (mean|[0-9]+) +[0-9]+ )' "$WORK/$name.txt" \
    | tail -60 >> "$OUT/session.md"
  [ "$rc" = 0 ] || tail -5 "$WORK/$name.txt" | sed 's/^/    /' >> "$OUT/session.md"
}

{
  echo "# etem-tracker device session $(date -u +%Y-%m-%dT%H:%MZ) ($WHAT)"
  python3 -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version(), \
'|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
} > "$OUT/session.md"

if [ "$WHAT" = checks ]; then
  if [ "$SMOKE" = 1 ]; then S="--sizes 256"; F=20; BIG=512; MS=128; OB=8; else S="--sizes 512,1024"; F=300; BIG=4096; MS=1024; OB=256; fi
  step gpu_tests 100 python3 -m pytest -q -m gpu -p no:cacheprovider tests
  step optics 45 python3 bench/bench_optics.py --devices "$DEVICE" --batch "$OB" --focal 1,3 --repeats 5
  step engines 140 python3 bench/bench_engines.py --device "$DEVICE" $S --widths 16,32 --depth 3 --batch 8 \
    --engines eager,compiled,aot,tensorrt,onnxruntime --repeat 10
  step msd 50 python3 bench/bench_msd.py --devices "$DEVICE" --sizes "$MS" --depth 100 --max-seconds 40
  # the benchmark's frames are Gaussian columns, an incoherent (STEM-like) image: the STEM model
  # reads them as they are (the HRTEM preview finds a ring of false columns around the particle)
  step pipeline 90 python3 bench/bench_pipeline.py --device "$DEVICE" --engine compiled --model haadf-stem \
    $S --columns 1000 --frames "$F"
  step pipeline_big 60 python3 bench/bench_pipeline.py --device "$DEVICE" --engine compiled --model haadf-stem \
    --sizes "$BIG" --columns 1000 --frames "$((F / 4))"
elif [ "$WHAT" = train ]; then
  M=${TRAIN_MINUTES:-4}
  if [ "$SMOKE" = 1 ]; then N=4; H=2; STEPS=20; else N=64; H=12; STEPS=${TRAIN_STEPS:-100000}; fi
  W="--sampling 0.0666667 --workers $(nproc)"
  step waves 100 $ETEM simulate waves --material au -n "$N" --seed 100 $W -o "$WORK/au_waves.h5"
  step heldout 50 $ETEM simulate waves --material au -n "$H" --seed 900 $W -o "$WORK/au_heldout.h5"
  T="--arch fusionnet --width 32 --depth 3 --batch 32 --size 256 --sampling 0.2 --preset au --imaging hrtem --device $DEVICE"
  [ "$SMOKE" = 1 ] && T="--arch fusionnet --width 8 --depth 2 --batch 2 --size 64 --sampling 0.2 --preset au --imaging hrtem --device $DEVICE"
  # a short run times a step; the real run's step count fills TRAIN_MINUTES (its learning-rate
  # schedule spans the whole run, so it cannot simply be cut short)
  step probe 80 $ETEM train "$WORK/au_waves.h5" -o "$WORK/probe" --checkpoint-every 0 $T --steps "$([ "$SMOKE" = 1 ] && echo 5 || echo 50)" --seed 1
  STEPS=$(python3 -c "import json; t=json.load(open('$WORK/probe.json'))['training']; \
print(max(20, min($STEPS, int($M * 60 * 0.9 * t['steps'] / t['seconds']))))" 2>/dev/null || echo 20)
  step train "$((M * 60 + 45))" $ETEM train "$WORK/au_waves.h5" -o "$OUT/au-hrtem-gpu" $T --steps "$STEPS" --seed 1 --checkpoint-every 0
  step evaluate 80 $ETEM evaluate "$OUT/au-hrtem-gpu.json" "$WORK/au_heldout.h5" -n 8 --write-card -o "$WORK/eval"
  cp "$WORK/eval/summary.csv" "$OUT/heldout_summary.csv" 2>/dev/null
  cp "$WORK/eval/f1_vs_dose.png" "$OUT/" 2>/dev/null
else
  echo "usage: bash bench/device_session.sh [checks|train]"; exit 2
fi
cat "$OUT/session.md"
