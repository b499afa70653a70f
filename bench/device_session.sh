#!/usr/bin/env bash
# Every GPU check of the project on a GPU machine (H100/H200): the GPU tests, then the optics,
# MSD-net, engine, stage and pipeline benchmarks, each under its own time limit. Together they
# may take 1165 s, more than one 10-minute call allows: ONLY="name ..." runs those steps alone
# (`train` stays under 10 minutes). Each step's log goes
# to WORK (default /tmp/etem-device); OUT (default ./device-out) gets session.md, which gathers
# every step's tables and how it ended, and (train) the model bundles, an archive each: at most
# 8 files, as a GPU machine's tooling may allow no more to come back.
#
#   bash bench/device_wheels.sh .whl              # here, once: the packages that machine lacks
#   bash bench/device_session.sh [checks|train]   # there, from the repository root, with .whl
#   ONLY="gpu_tests stages" GPU_TESTS=tests/test_engines_export.py bash bench/device_session.sh checks
#
# `train` instead computes the exit waves there (abTEM on the machine's CPU cores) and trains
# every bundled model side by side on the GPU for TRAIN_MINUTES (default 4); the bundles land in
# OUT/NAME.tar.gz, to be scored here with `etem evaluate` (train/make_models.sh's steps).
# SMOKE=1 shrinks every step to seconds (to try the script on a CPU machine: DEVICE=cpu SMOKE=1).
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
  if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$WORK/install.log" 2>&1; then
    # no build backend there: put the source folders on the path under the package's names
    tail -3 "$WORK/install.log"; echo "pip could not install the package; using the source tree as it is"
    mkdir -p "$WORK/src/etem"
    for d in tracker simulate train; do ln -sfn "$PWD/$d" "$WORK/src/etem/$d"; done
    export PYTHONPATH=$WORK/src${PYTHONPATH:+:$PYTHONPATH}
    python3 -c "import etem.tracker, etem.simulate, etem.train" || { echo "the package cannot be imported"; exit 1; }
  fi
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its output, say how it ended
  local name=$1 limit=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.txt" 2>&1
  local rc=$?
  printf '\n## %s (exit %s, %s s)\n\n`%s`\n\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >> "$OUT/session.md"
  grep -E '^(\||#|[0-9]+ (passed|failed|skipped)|FAILED|ERROR|method|[a-z].* (mean|[0-9]+) +[0-9]+ )' "$WORK/$name.txt" \
    | tail -60 >> "$OUT/session.md"
  [ "$rc" = 0 ] || tail -5 "$WORK/$name.txt" | sed 's/^/    /' >> "$OUT/session.md"
  [ "$WHAT" = checks ] && tar czf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*.h5' . 2>/dev/null
}

{
  echo "# etem-tracker device session $(date -u +%Y-%m-%dT%H:%MZ) ($WHAT)"
  python3 -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version(), \
'|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
} > "$OUT/session.md"

if [ "$WHAT" = checks ]; then
  # most wanted first: a step cut short by the call's own limit still leaves the earlier ones'
  # tables in session.md, and every step's full log in logs.tar.gz
  if [ "$SMOKE" = 1 ]; then S="--sizes 256"; F=20; BIG=512; MS=128; OB=8; R=20; RB=5
  else S="--sizes 1024"; F=600; BIG=4096; MS=1024; OB=256; R=300; RB=25; fi
  step gpu_tests 100 python3 -m pytest -q -m gpu -p no:cacheprovider ${GPU_TESTS:-tests}
  step optics 40 python3 bench/bench_optics.py --devices "$DEVICE" --batch "$OB" --focal 1,3 --repeats 5
  step msd 45 python3 bench/bench_msd.py --devices "$DEVICE" --sizes "$MS" --depth 100 --max-seconds 35
  # the reference (torch.compile fp16, default mode) and the engines, at the issue's frame size
  step engines 150 python3 bench/bench_engines.py --device "$DEVICE" $S --widths 16,32 --depth 3 --batch 8 \
    --engines eager,compiled,tensorrt --repeat 10
  # AOTInductor apart: its build crashed the whole table once (torch 2.11, H200)
  step engines_aot 90 python3 bench/bench_engines.py --device "$DEVICE" $S --widths 16 --depth 3 --batch 8 \
    --engines eager,aot --repeat 10
  # inductor's max-autotune (Triton templates tried against cuDNN for each convolution) against
  # the reference: the one compile mode not yet measured toward the 1.3x target
  step engines_autotune 240 python3 bench/bench_engines.py --device "$DEVICE" $S --widths 32 --depth 3 --batch 8 \
    --engines compiled,autotune --repeat 10
  # each detector stage alone (device synchronized), and linking and the site map alone: what
  # the pipeline's per-stage times would be without the two threads contending
  step stages 80 python3 bench/bench_stages.py --device "$DEVICE" --engine compiled --model haadf-stem \
    --sizes "${S#--sizes },$BIG" --columns 1000 --batch 4 --count-ops
  # the benchmark's frames are Gaussian columns, an incoherent (STEM-like) image: the STEM model
  # reads them as they are (the HRTEM preview finds a ring of false columns around the particle).
  # Each size twice: sent as fast as taken (throughput; the latency then holds the queue) and
  # at the issue's rate (the latency of a pipeline that keeps up)
  step pipeline 110 python3 bench/bench_pipeline.py --device "$DEVICE" --engine compiled --model haadf-stem \
    $S --columns 1000 --frames "$F" --fps "0,$R"
  step pipeline_big 90 python3 bench/bench_pipeline.py --device "$DEVICE" --engine compiled --model haadf-stem \
    --sizes "$BIG" --columns 1000 --frames "$((F / 6))" --fps "0,$RB" --unique 8
  # the same two with the detector in a process of its own (detection and the host stage
  # each with an interpreter of their own)
  step pipeline_process 120 python3 bench/bench_pipeline.py --device "$DEVICE" --engine compiled \
    --model haadf-stem $S --columns 1000 --frames "$F" --fps "0,$R" --detection process
  step pipeline_big_process 100 python3 bench/bench_pipeline.py --device "$DEVICE" --engine compiled \
    --model haadf-stem --sizes "$BIG" --columns 1000 --frames "$((F / 6))" --fps "0,$RB" --unique 8 \
    --detection process
elif [ "$WHAT" = train ]; then
  # Every bundled model at once: the exit waves on the machine's CPU cores, then one training
  # process per model on the one GPU, side by side, each for TRAIN_MINUTES (the learning-rate
  # schedule spread over that time). The recipes are those of train/make_models.sh with more
  # structures, bigger batches (several samples per wave) and, for some, wider networks.
  # Scoring on held-out sets is done afterwards, anywhere (`etem evaluate`, make_models.sh).
  M=${TRAIN_MINUTES:-4}
  NP=$(nproc)
  if [ "$SMOKE" = 1 ]; then
    NAU=4; NG=3; NM=3; M=0.15; B="--batch 4 --samples-per-wave 2 --size 64"; MSD=6; NET16=8; NET32=8
  else
    NAU=${N_AU:-160}; NG=${N_GRAPHENE:-64}; NM=${N_MOS2:-128}; B="--batch 32 --samples-per-wave 4 --size 128"
    MSD=100; NET16=16; NET32=24  # width 24, depth 3: about 10 MB of weights, under the 16 MiB a file may bring back
  fi
  W="--sampling 0.0666667 --workers $NP"
  step waves_au 180 $ETEM simulate waves --material au -n "$NAU" --seed 100 $W -o "$WORK/au_waves.h5"
  step waves_graphene 90 $ETEM simulate waves --material graphene -n "$NG" --seed 200 $W -o "$WORK/graphene_waves.h5"
  step waves_mos2 120 $ETEM simulate waves --material mos2 --substrate mixed -n "$NM" --seed 300 $W --energy 80e3 \
    -o "$WORK/mos2_waves.h5"
  mkdir -p "$WORK/models"
  C="--device $DEVICE --minutes $M --checkpoint-every 0 $B"
  AU="$WORK/au_waves.h5 --sampling 0.2 --preset au --imaging hrtem"
  MO="$WORK/mos2_waves.h5 --sampling 0.1 --label-sigma 0.4 --preset mos2 --focal=-100,0,100"
  declare -A JOBS=(
    [au-hrtem]="$AU --arch fusionnet --width $NET16 --depth 3 --unshuffle 2 --seed 1"
    [au-hrtem-w24]="$AU --arch fusionnet --width $NET32 --depth 3 --unshuffle 2 --seed 11"
    [haadf-stem]="$WORK/au_waves.h5 $WORK/mos2_waves.h5 $WORK/graphene_waves.h5 --classes column --sampling 0.2 \
--preset haadf --imaging haadf --arch fusionnet --width $NET16 --depth 2 --unshuffle 2 --seed 2"
    [graphene-hrtem]="$WORK/graphene_waves.h5 --sampling 0.2 --preset graphene --imaging hrtem --arch fusionnet \
--width $NET32 --depth 3 --seed 3"
    [au-heights]="$AU --focal=-100,0,100 --classes height --arch fusionnet --width $NET32 --depth 3 --unshuffle 2 --seed 4"
    [mos2-unet]="$MO --arch unet --width $NET16 --depth 3 --seed 6"
    [mos2-msdnet]="$MO --arch msdnet --depth $MSD --seed 5 --coarse-fraction 0.5 --coarse-factor 1.5,2.5"
  )
  # after the common options: the Au HRTEM models see 192² crops (38 Å; docs/models.md: the
  # context that tells columns from the bright hollow sites of [111] particles)
  CTX="--size 192"; [ "$SMOKE" = 1 ] && CTX=""
  # models whose classes count (heights; Mo, S2, S): the weights kept are those of the best
  # validation F1 x class accuracy, on 48 validation images (on 2 CPU cores this kept a
  # fine-tuned au-heights that counts 0.01-0.03 more columns exactly; docs/guides/training.md)
  SEL="--select classes --validation-images 48"
  declare -A LAST=([au-hrtem]="$CTX" [au-hrtem-w24]="$CTX" [au-heights]="$CTX $SEL" [mos2-unet]="$SEL"
                   [mos2-msdnet]="$SEL")
  # the time each process has beyond its training minutes (start, validation sets, the bundle):
  # 120 s on a GPU machine's 16 cores; seven processes on a 2-core machine need several minutes
  SLACK=${TRAIN_SLACK:-120}; [ "$SMOKE" = 1 ] && SLACK=${TRAIN_SLACK:-900}
  t0=$SECONDS
  for name in "${!JOBS[@]}"; do  # one process per model, a few CPU threads each
    OMP_NUM_THREADS=2 timeout --kill-after=10 "$(python3 -c "print(int($M * 60 + $SLACK))")" \
      $ETEM train ${JOBS[$name]} $C ${LAST[$name]:-} -o "$WORK/models/$name" > "$WORK/train_$name.txt" 2>&1 &
  done
  wait
  printf '\n## train: %s models side by side, %s min each (%s s)\n\n' "${#JOBS[@]}" "$M" "$((SECONDS - t0))" \
    >> "$OUT/session.md"
  for name in $(printf '%s\n' "${!JOBS[@]}" | sort); do
    printf -- '- %s: %s\n' "$name" "$(grep -E 'bundle|Error|error' "$WORK/train_$name.txt" | tail -1)" >> "$OUT/session.md"
  done
  # one archive per model (at most 8 files come back, 16 MiB each): with session.md, 8
  for name in "${!JOBS[@]}"; do
    [ -f "$WORK/models/$name.json" ] && tar czf "$OUT/$name.tar.gz" -C "$WORK/models" "$name.json" "$name.safetensors"
  done
  ls -l "$OUT"/*.tar.gz >> "$OUT/session.md" 2>/dev/null
  for f in "$WORK"/train_*.txt; do printf '\n    %s\n' "$f"; tail -n 3 "$f" | sed 's/^/    /'; done >> "$OUT/session.md"
else
  echo "usage: bash bench/device_session.sh [checks|train]"; exit 2
fi
cat "$OUT/session.md"
