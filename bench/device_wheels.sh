#!/usr/bin/env bash
# Wheels for a GPU machine that has PyTorch, h5py, pandas, scikit-image, onnx(runtime), numba,
# matplotlib … but not this project's other needs, and no package index.
#
#   bash bench/device_wheels.sh [DIR]        # DIR defaults to .whl (keep it out of git)
#
# Binary packages are downloaded for CPython 3.12 on x86-64 Linux; pure-Python ones are built
# into wheels here (some, such as trackpy, come only as source). On the GPU machine:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site DIR/*.whl
#   export PYTHONPATH=/tmp/site
#   python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
#
# bench/device_session.sh does that and then runs the GPU checks.
set -euo pipefail
DIR=${1:-.whl}
PY=${PY:-3.12}
mkdir -p "$DIR"
# what the tracker, the simulator and the tests need beyond the machine's own packages (abTEM
# imports ipywidgets and IPython; TIFF reading needs python-box); kept under 20 MB, since what
# travels to the GPU machine is limited
BINARY="pyzmq numcodecs google-crc32c tornado wcwidth python-box rosettasciio"
PURE="trackpy==0.7 looseversion ase abtem dask distributed partd locket zict tblib zarr donfig pint flexcache
flexparser platformdirs mrcfile ipywidgets ipython traitlets comm jupyterlab-widgets matplotlib-inline
ipython-pygments-lexers prompt-toolkit stack-data executing asttokens pure-eval pexpect ptyprocess"
PLAT=""
for n in 17 24 26 27 28 31 34; do PLAT="$PLAT --platform manylinux_2_${n}_x86_64"; done
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 $PLAT -d "$DIR" $BINARY
# shellcheck disable=SC2086
python3 -m pip wheel -q --no-deps -w "$DIR" $PURE
du -sh "$DIR"
ls "$DIR"
