#!/usr/bin/env bash
# Regenerate the models that ship in tracker/models/ and their evaluation tables.
#
#   bash train/make_models.sh [OUT] [DEVICE]      # OUT defaults to ./models-build, DEVICE to cpu
#
# Every step is an `etem` command, so each model card records how it was made. The wave sets
# use fixed seeds; the held-out sets (seeds 900+) never overlap the training structures.
# Copy OUT/*.json and OUT/*.safetensors into tracker/models/ to ship them. A model whose bundle
# is already in OUT is not trained again, only scored: unpack the bundles that
# `bench/device_session.sh train` brought back from a GPU into OUT first.
#
#   SCORE_ONLY=1 bash train/make_models.sh OUT   # score the bundles in OUT, train nothing
#
# re-scores bundles (e.g. a copy of tracker/models/) with the current code: only the held-out
# wave sets are made, and a model missing from OUT is left out with a line saying so.
set -euo pipefail
OUT=${1:-models-build}
DEVICE=${2:-cpu}
SCORE_ONLY=${SCORE_ONLY:-0}
mkdir -p "$OUT"
W="--sampling 0.0666667 --workers ${WORKERS:-2}"

# have NAME: the bundle is in OUT, or (unless SCORE_ONLY=1) the caller may go on to train it
have() { [ -f "$OUT/$1.json" ] && return 0; [ "$SCORE_ONLY" = 1 ] && { echo "skip $1: not in $OUT" >&2; return 1; }; return 0; }
# training wave sets are made only when something is to be trained
train_waves() { [ "$SCORE_ONLY" != 1 ] && [ ! -f "$OUT/$1" ]; }

# exit waves: training sets and held-out sets (other seeds)
train_waves au_waves.h5       \
  && etem simulate waves --material au       -n 64 --seed 100 $W -o "$OUT/au_waves.h5"
train_waves graphene_waves.h5 \
  && etem simulate waves --material graphene -n 32 --seed 200 $W -o "$OUT/graphene_waves.h5"
# MoS2 at 80 kV, flakes bare or on a graphene sheet (drawn per structure): the focal-series
# models of (c) and, with the Au and graphene sets, the STEM finder of (e)
MW="--sampling 0.0666667 --workers ${WORKERS:-2} --energy 80e3"
train_waves mos2_waves.h5 \
  && etem simulate waves --material mos2 --substrate mixed -n 64 --seed 300 $MW -o "$OUT/mos2_waves.h5"
[ -f "$OUT/mos2_heldout_bare.h5" ]     || etem simulate waves --material mos2 -n 8 --seed 902 $MW -o "$OUT/mos2_heldout_bare.h5"
[ -f "$OUT/mos2_heldout_graphene.h5" ] || etem simulate waves --material mos2 --substrate graphene -n 8 --seed 903 $MW \
  -o "$OUT/mos2_heldout_graphene.h5"
[ -f "$OUT/au_heldout.h5" ]      || etem simulate waves --material au       -n 12 --seed 900 $W -o "$OUT/au_heldout.h5"
[ -f "$OUT/graphene_heldout.h5" ] || etem simulate waves --material graphene -n 8 --seed 901 $W -o "$OUT/graphene_heldout.h5"
[ -f "$OUT/au_heldout_tilt1.h5" ] || etem simulate waves --material au -n 12 --seed 903 --tilt-max 1 $W \
  -o "$OUT/au_heldout_tilt1.h5"
# a pristine graphene sheet (a perfect periodic honeycomb): the spread of bond lengths between found atoms
[ -f "$OUT/graphene_pristine.h5" ] || etem simulate waves --material graphene-pristine -n 4 --seed 950 $W \
  -o "$OUT/graphene_pristine.h5"

# (a) Au nanoparticles, HRTEM, single image; (e) HAADF-STEM column finder (same structures)
# the CPU architecture: FusionNet width 16 on 2x2 pixel blocks (docs/models.md). The Au HRTEM
# model is one level deeper and sees 192² crops (38 Å), the context that tells columns from the
# bright hollow sites of [111] particles. The shipped preview is trained in two runs on 2 CPU cores:
# 45 min from random weights (12,715 steps, held-out 0.830), then 30 min more from those weights
# with --init at its learning rate of 5e-4 (5,282 steps, 0.839, and half the false flips at the
# demo's empty surface sites; a second such run with --seed 7 gave 0.830 and more false flips:
# the recipe makes this kind of model, its figures vary by run). The first run's bundle stays in OUT/stages/.
T="--arch fusionnet --width 16 --depth 2 --unshuffle 2 --batch 8 --size 96 --sampling 0.2 --device $DEVICE"
have au-hrtem && { [ -f "$OUT/au-hrtem.json" ] || { mkdir -p "$OUT/stages"
  [ -f "$OUT/stages/au-hrtem-first.json" ] || etem train "$OUT/au_waves.h5" -o "$OUT/stages/au-hrtem-first" --arch fusionnet \
    --width 16 --depth 3 --unshuffle 2 --batch 4 --size 192 --sampling 0.2 --device "$DEVICE" --minutes "${AU_MINUTES:-45}" \
    --preset au --imaging hrtem --seed 1 --checkpoint-every 100
  etem train "$OUT/au_waves.h5" -o "$OUT/au-hrtem" --init "$OUT/stages/au-hrtem-first" \
    --device "$DEVICE" --minutes "${AU_MORE_MINUTES:-30}" --seed 0 --checkpoint-every 100; }; }
# the STEM finder is one class, "column", for any material: trained on the Au, MoS2 and graphene
# sets together (a HAADF image is drawn from the labelled atoms, so a MoS2 flake's graphene
# support does not show in it)
have haadf-stem && { [ -f "$OUT/haadf-stem.json" ] || etem train "$OUT/au_waves.h5" "$OUT/mos2_waves.h5" \
  "$OUT/graphene_waves.h5" -o "$OUT/haadf-stem" $T --steps 3000 --preset haadf --imaging haadf --classes column --seed 2; }
# (b) graphene, HRTEM, single image: at full resolution, one run of 4,463 steps under the
# `graphene` preset (astigmatism 0-20 Å, dose from 100 e/Å²): on 2 CPU cores about 45 min,
# held-out 0.693 (2026-12-07: the shipped preview). Under the preset's earlier, wider astigmatism
# the same run scored 0.648, and 3,261 more steps from its weights with --init 0.670; from this
# model the same 3,261 steps never beat its validation F1 (0.675), so the recipe stops at one run.
# The 2x2-block network of the other CPU models, 16 min, scored 0.549.
have graphene-hrtem && { [ -f "$OUT/graphene-hrtem.json" ] || etem train "$OUT/graphene_waves.h5" \
  -o "$OUT/graphene-hrtem" --arch fusionnet --width 16 --depth 3 --batch 8 --size 96 --sampling 0.2 --device "$DEVICE" \
  --steps "${GRAPHENE_STEPS:-4463}" --preset graphene --imaging hrtem --seed 3 --checkpoint-every 250; }

# evaluation on the held-out sets, beside the classical locator; Wei et al.'s sweeps from a
# fixed microscope give the cut-offs, radar plots and the trust ranges the tracker judges
# frames by (stored in the cards)
for m in au-hrtem haadf-stem; do
  [ -f "$OUT/$m.json" ] || continue
  etem evaluate "$OUT/$m" "$OUT/au_heldout.h5" -n 8 --write-card -o "$OUT/eval-$m"
  etem evaluate "$OUT/$m" "$OUT/au_heldout_tilt1.h5" --sweep -n 16 --write-card -o "$OUT/sweep-$m"
done
if [ -f "$OUT/haadf-stem.json" ]; then  # the STEM finder on the other materials' held-out sets
  etem evaluate "$OUT/haadf-stem" "$OUT/mos2_heldout_bare.h5" -n 8 --write-card heldout_mos2 -o "$OUT/eval-haadf-stem-mos2"
  etem evaluate "$OUT/haadf-stem" "$OUT/graphene_heldout.h5" -n 8 --write-card heldout_graphene \
    -o "$OUT/eval-haadf-stem-graphene"
fi
if [ -f "$OUT/graphene-hrtem.json" ]; then
  etem evaluate "$OUT/graphene-hrtem" "$OUT/graphene_heldout.h5" -n 8 --write-card -o "$OUT/eval-graphene-hrtem"
  etem evaluate "$OUT/graphene-hrtem" "$OUT/graphene_heldout.h5" --sweep -n 16 --write-card -o "$OUT/sweep-graphene-hrtem"
  etem evaluate "$OUT/graphene-hrtem" "$OUT/graphene_pristine.h5" --bonds 1.42 --doses 1000,10000 -n 4 \
    -o "$OUT/bonds-graphene-hrtem"
  # within 1 Å a spot on a bond centre (0.71 Å from two atoms) counts as a found atom: scored
  # again within 0.5 Å, the atoms cut by the image's edge (the locator never reports them) left out
  etem evaluate "$OUT/graphene-hrtem" "$OUT/graphene_heldout.h5" -n 8 --radius 0.5 --border 1 \
    -o "$OUT/eval-graphene-hrtem-r05"
fi

# (d) Au column heights (atoms per column, 1 .. 10+) from a three-image focal series (Madsen et
# al. 2018, §4.3), scored as Madsen's Fig. 12 (columns miscounted by 1, 2, 3+ atoms against dose,
# up to 3x10^4 e/Å²) on the particles within 1° of the zone axis. The same Au waves, labelled by
# height; the network and view of au-hrtem (192² crops on 2x2 pixel blocks), in three runs. The
# shipped preview: 55 min on 2 CPU cores (9,503 steps), then 30 min more from those weights
# (6,116 steps; held-out exact heights 0.63-0.66 -> 0.70-0.73 from 300 e/Å²), then 45 min more
# at a lower rate, the weights kept by validation F1 x class accuracy on 48 images (6,625 steps;
# 0.71-0.72 -> 0.73 from 10³ e/Å² on 16 images a dose, 0.57 -> 0.59 at 100).
if have au-heights; then
  [ -f "$OUT/au-heights.json" ] || { mkdir -p "$OUT/stages"
    [ -f "$OUT/stages/au-heights-first.json" ] || etem train "$OUT/au_waves.h5" -o "$OUT/stages/au-heights-first" \
      --arch fusionnet --width 16 --depth 3 --unshuffle 2 --batch 4 --size 192 --sampling 0.2 --device "$DEVICE" \
      --minutes "${HEIGHT_MINUTES:-55}" --preset au --imaging hrtem --focal=-100,0,100 --classes height --seed 4 \
      --checkpoint-every 100
    [ -f "$OUT/stages/au-heights-second.json" ] || etem train "$OUT/au_waves.h5" -o "$OUT/stages/au-heights-second" \
      --init "$OUT/stages/au-heights-first" --device "$DEVICE" --minutes "${HEIGHT_MORE_MINUTES:-30}" --seed 0 \
      --checkpoint-every 100
    etem train "$OUT/au_waves.h5" -o "$OUT/au-heights" --init "$OUT/stages/au-heights-second" --device "$DEVICE" \
      --minutes "${HEIGHT_LAST_MINUTES:-45}" --seed 1 --lr 2.5e-4 --select classes --validation-images 48 \
      --checkpoint-every 100; }
  etem evaluate "$OUT/au-heights" "$OUT/au_heldout_tilt1.h5" -n 8 --doses 100,300,1000,3000,10000,30000 \
    --write-card -o "$OUT/eval-au-heights"
  etem evaluate "$OUT/au-heights" "$OUT/au_heldout_tilt1.h5" --sweep -n 16 --write-card -o "$OUT/sweep-au-heights"
fi

# (c) MoS2 three-image focal series with Mo/S2/S classes (Larsen et al.), 80 kV: flakes bare or on
# a graphene sheet (drawn per structure), held-out sets of each. The U-Net is the shipped CPU
# preview (3,000 steps: 33 min on 2 CPU cores); MSD-net (depth 100 at full resolution, Larsen's
# comparison; about 2 s a step on 2 CPU cores, the shipped one stopped by --minutes 65 at 1,826
# steps; half of its images taken with 1.5-2.5x larger pixels and enlarged, as the tracker
# enlarges coarser frames, without which it found columns in a resampled movie's vacuum):
# set MOS2_MSD=1.
M="--batch 8 --size 128 --sampling 0.1 --label-sigma 0.4 --preset mos2 --focal=-100,0,100 --device $DEVICE"
MSTEPS=${MOS2_STEPS:-3000}
MODELS=""
if have mos2-unet; then
  [ -f "$OUT/mos2-unet.json" ] || etem train "$OUT/mos2_waves.h5" -o "$OUT/mos2-unet" --arch unet --width 16 --depth 3 $M \
    --steps "$MSTEPS" --seed 6 --checkpoint-every 250
  MODELS="$OUT/mos2-unet"
fi
if { [ "${MOS2_MSD:-0}" = 1 ] && [ "$SCORE_ONLY" != 1 ]; } || [ -f "$OUT/mos2-msdnet.json" ]; then
  [ -f "$OUT/mos2-msdnet.json" ] || etem train "$OUT/mos2_waves.h5" -o "$OUT/mos2-msdnet" --arch msdnet --depth 100 $M \
    --steps "$MSTEPS" --seed 5 --checkpoint-every 500 --coarse-fraction 0.5 --coarse-factor 1.5,2.5
  MODELS="$OUT/mos2-msdnet${MODELS:+,$MODELS}"
fi
if [ -n "$MODELS" ]; then
  etem evaluate "$MODELS" "$OUT/mos2_heldout_bare.h5" -n 8 --write-card -o "$OUT/eval-mos2-bare"
  etem evaluate "$MODELS" "$OUT/mos2_heldout_graphene.h5" -n 8 --write-card heldout_on_graphene -o "$OUT/eval-mos2-graphene"
  etem evaluate "$MODELS" "$OUT/mos2_heldout_bare.h5" --sweep -n 16 --write-card -o "$OUT/sweep-mos2"
fi

# calibration images of each model's int8 graph (the onnxruntime engine with --int8 on CPUs;
# docs/models.md): drawn as the held-out images are, from waves of seeds neither training nor
# the held-out sets use; a few hundred kB each, shipped beside the bundles as NAME.calib.npz.
# Not for mos2-msdnet: on CPUs it runs in torch (the engine 'auto' picks eager for MSD-nets),
# its ONNX graph being many times slower under onnxruntime.
[ -f "$OUT/au_calib.h5" ]       || etem simulate waves --material au       -n 4 --seed 910 $W -o "$OUT/au_calib.h5"
[ -f "$OUT/graphene_calib.h5" ] || etem simulate waves --material graphene -n 4 --seed 911 $W -o "$OUT/graphene_calib.h5"
[ -f "$OUT/mos2_calib.h5" ]     || etem simulate waves --material mos2 --substrate mixed -n 4 --seed 912 $MW \
  -o "$OUT/mos2_calib.h5"
for m in au-hrtem:au au-heights:au haadf-stem:au,mos2,graphene graphene-hrtem:graphene mos2-unet:mos2; do
  name=${m%%:*}; sets=""
  for s in $(echo "${m#*:}" | tr , ' '); do sets="$sets $OUT/${s}_calib.h5"; done
  [ -f "$OUT/$name.json" ] && etem engine calibrate "$OUT/$name" $sets -o "$OUT/$name.calib.npz"
done
