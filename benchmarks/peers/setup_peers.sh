#!/bin/sh
# Build the benchmark peers cnn_gp and ckn_kernel from their public sources,
# already fetched (this script downloads no peer code), into a virtualenv under
# /tmp.  They are benchmark peers only: never dependencies of the package,
# never copied into this repository.
#
#   sh benchmarks/peers/setup_peers.sh SRC [VENV]
#
# SRC holds the two checkouts, e.g.
#   git clone https://github.com/cambridge-mlg/cnn-gp SRC/cnn-gp
#   git clone https://github.com/albietz/ckn_kernel SRC/ckn_kernel
# VENV (default /tmp/peervenv) is created with numpy, Cython 0.29 (its .pyx divides
# indices with `/`, an error under Cython 3's language level 3) and CPU PyTorch
# (set TORCH_WHEEL=/path/to/torch-*.whl to install a local wheel instead of the
# PyTorch CPU index).  Needs g++ and Debian's Eigen: apt-get install -y libeigen3-dev.
#
# Build fixes applied to the ckn_kernel checkout (in SRC, with sed; idempotent):
#   1. setup.py links MKL and Intel OpenMP (libs = [mkl_*, iomp5]) and reads
#      $CONDA_PREFIX: link GNU OpenMP (gomp) instead, CONDA_PREFIX optional;
#   2. setup.py downloads Eigen 3.3.9 into include/ when include/Eigen is
#      missing: link include/Eigen and include/unsupported to Debian's
#      /usr/include/eigen3 instead (no download);
#   3. CKNKernelMatrix.h: the free function computeNorms() (its
#      precomputed-norms path) falls off its end without `return`; with g++ 12
#      -O3 the call then aborts ("double free"): add `return 0;`.
# cnn_gp needs no build: the benchmark loads its cnn_gp/kernels.py directly
# (its package __init__ imports torchvision, which is not needed).
set -eu
SRC=${1:?usage: setup_peers.sh SRC [VENV]}
VENV=${2:-/tmp/peervenv}
SRC=$(cd "$SRC" && pwd)
CKN=$SRC/ckn_kernel
test -f "$SRC/cnn-gp/cnn_gp/kernels.py" || { echo "missing $SRC/cnn-gp (cambridge-mlg/cnn-gp)" >&2; exit 1; }
test -f "$CKN/CKNKernelMatrix.h" || { echo "missing $CKN (albietz/ckn_kernel)" >&2; exit 1; }
test -d /usr/include/eigen3/Eigen || { echo "Eigen missing: apt-get install -y libeigen3-dev" >&2; exit 1; }

PY=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q "numpy<2.3" "Cython<3" setuptools
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    :
elif [ -n "${TORCH_WHEEL:-}" ]; then
    "$VENV/bin/pip" install -q "$TORCH_WHEEL"
else
    "$VENV/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu
fi

# fix 1: no MKL / Intel OpenMP, no conda
sed -i -e "s/^libs = \[.*\]$/libs = ['gomp']/" \
       -e "s/os.environ\['CONDA_PREFIX'\]/os.environ.get('CONDA_PREFIX', '\/usr')/" "$CKN/setup.py"
grep "^libs = \['gomp'\]\$" "$CKN/setup.py" >/dev/null || {
    echo "setup.py differs from the expected version: check fix 1" >&2; exit 1; }
# fix 2: Debian's Eigen instead of a download
mkdir -p "$CKN/include"
ln -sfn /usr/include/eigen3/Eigen "$CKN/include/Eigen"
ln -sfn /usr/include/eigen3/unsupported "$CKN/include/unsupported"
# fix 3: the missing return of computeNorms()
grep -q "^  kernel.computeNorms(im, norms, normsInv);\$" "$CKN/CKNKernelMatrix.h" || {
    echo "CKNKernelMatrix.h differs from the expected version: check fix 3" >&2; exit 1; }
if ! grep -A1 "^  kernel.computeNorms(im, norms, normsInv);\$" "$CKN/CKNKernelMatrix.h" | grep -q "return 0;"; then
    sed -i "s/^  kernel.computeNorms(im, norms, normsInv);\$/&\n  return 0;/" "$CKN/CKNKernelMatrix.h"
fi
(cd "$CKN" && "$VENV/bin/python" setup.py build_ext -if >build.log 2>&1) || {
    tail -20 "$CKN/build.log" >&2; exit 1; }
(cd "$CKN" && "$VENV/bin/python" -c "import ckn_kernel; print('ckn_kernel built:', ckn_kernel.__file__)")
"$VENV/bin/python" -c "import torch; print('torch', torch.__version__)"
echo "peers ready: --peer-python $VENV/bin/python --cnn-gp-src $SRC/cnn-gp --ckn-kernel-src $CKN"
