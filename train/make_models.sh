#!/usr/bin/env bash
# Regenerate the models that ship in tracker/models/ and their evaluation tables.
#
#   bash train/make_models.sh [OUT] [DEVICE]      # OUT defaults to ./models-build, DEVICE to cpu
#
# Every step is an `etem` command, so each model card records how it was made. The wave sets
# use fixed seeds; the held-out sets (seeds 900+) never overlap the training structures.
# Copy OUT/*.json and OUT/*.safetensors into tracker/models/ to ship them.
set -euo pipefail
OUT=${1:-models-build}
DEVICE=${2:-cpu}
mkdir -p "$OUT"
W="--sampling 0.0666667 --workers ${WORKERS:-2}"

# exit waves: training sets and held-out sets (other seeds)
[ -f "$OUT/au_waves.h5" ]        || etem simulate waves --material au       -n 64 --seed 100 $W -o "$OUT/au_waves.h5"
[ -f "$OUT/graphene_waves.h5" ]  || etem simulate waves --material graphene -n 32 --seed 200 $W -o "$OUT/graphene_waves.h5"
[ -f "$OUT/au_heldout.h5" ]      || etem simulate waves --material au       -n 12 --seed 900 $W -o "$OUT/au_heldout.h5"
[ -f "$OUT/graphene_heldout.h5" ] || etem simulate waves --material graphene -n 8 --seed 901 $W -o "$OUT/graphene_heldout.h5"

# (a) Au nanoparticles, HRTEM, single image; (e) HAADF-STEM column finder (same structures)
T="--arch fusionnet --width 8 --depth 3 --batch 8 --size 96 --sampling 0.2 --device $DEVICE"
etem train "$OUT/au_waves.h5" -o "$OUT/au-hrtem" $T --steps 3000 --preset au --imaging hrtem --seed 1
etem train "$OUT/au_waves.h5" -o "$OUT/haadf-stem" $T --steps 2000 --preset haadf --imaging haadf --seed 2
# (b) graphene, HRTEM, single image
etem train "$OUT/graphene_waves.h5" -o "$OUT/graphene-hrtem" $T --steps 2000 --preset graphene --imaging hrtem --seed 3

# evaluation on the held-out sets, beside the classical locator
etem evaluate "$OUT/au-hrtem" "$OUT/au_heldout.h5" -n 8 --write-card -o "$OUT/eval-au-hrtem"
etem evaluate "$OUT/haadf-stem" "$OUT/au_heldout.h5" -n 8 --write-card -o "$OUT/eval-haadf-stem"
etem evaluate "$OUT/graphene-hrtem" "$OUT/graphene_heldout.h5" -n 8 --write-card -o "$OUT/eval-graphene-hrtem"
