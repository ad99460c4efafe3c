#!/usr/bin/env bash
# Prepares, on a machine that reaches PyPI, everything the GPU check (gpu/check.sh) needs on a CUDA
# machine that reaches nothing: the wheels it lacks (gpu/missing-on-target.txt, at requirements.lock's
# versions), the raw MNIST files and pytorch-fid's Inception weights — one .tar.gz with a manifest of
# every file's sha256, split into pieces small enough to carry one at a time.
#
#   bash gpu/bundle.sh [--python-version 3.12] [--piece-size 58M] [--out .gpu-bundle]
#   bash gpu/bundle.sh --pack DIR [--piece-size 58M] [--out .gpu-bundle]   (pack a payload folder as is)
#
# Writes <out>/part-NN/bundle.tgz.NN and SHA256SUMS (the pieces' sha256, in every part folder).
# --python-version is the target's Python (NVIDIA's current PyTorch images: 3.12); --piece-size
# is split(1)'s size (58M: one piece and the repository fit in 64 MiB, for a node reached a little at a time).
set -euo pipefail
cd "$(dirname "$0")/.."

PYVER=3.12
PIECE_SIZE=58M
OUT=.gpu-bundle
PACK=
PY=${PYTHON:-.venv/bin/python}
while [[ $# -gt 0 ]]; do
  case $1 in
    --python-version) PYVER=$2; shift 2 ;;
    --piece-size) PIECE_SIZE=$2; shift 2 ;;
    --pack) PACK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "gpu/bundle.sh: unknown argument $1 (see the header of gpu/bundle.sh)" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
payload=$work/payload

# The payload folder -> <out>/part-NN/: a sha256 manifest of every file inside, one .tar.gz, pieces.
pack() {
  (cd "$payload" && find . -type f ! -name MANIFEST.sha256 -print0 | sort -z | xargs -0 sha256sum > "$work/MANIFEST.sha256")
  mv "$work/MANIFEST.sha256" "$payload/MANIFEST.sha256"   # written beside, so it never lists itself
  tar -C "$work" -czf "$work/bundle.tgz" payload
  split -b "$PIECE_SIZE" -d -a 2 "$work/bundle.tgz" "$work/bundle.tgz."
  rm "$work/bundle.tgz"
  (cd "$work" && sha256sum bundle.tgz.* > SHA256SUMS)
  rm -rf "$OUT"
  for piece in "$work"/bundle.tgz.*; do
    n=${piece##*.}
    mkdir -p "$OUT/part-$n"
    mv "$piece" "$OUT/part-$n/"
    cp "$work/SHA256SUMS" "$OUT/part-$n/"
  done
  echo "GPU bundle: $(ls -d "$OUT"/part-* | wc -l) part(s) under $OUT ($(du -sh "$OUT" | cut -f1))"
  ls -d "$OUT"/part-* | sed 's/^/  /'
}

if [[ -n $PACK ]]; then
  [[ -d $PACK ]] || { echo "gpu/bundle.sh: --pack $PACK: no such folder" >&2; exit 2; }
  cp -R "$PACK" "$payload"
  pack
  exit 0
fi

[[ -x $PY ]] || { echo "gpu/bundle.sh: $PY not found: run 'make provision' first (it bootstraps .venv)" >&2; exit 2; }
mkdir -p "$payload/wheels" "$payload/resources/mnist/raw" "$payload/resources/inception"

# 1. wheels for the target's Python and platform, each at the version requirements.lock pins
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any)
while read -r name; do
  [[ -z $name || $name == \#* ]] && continue
  pattern="^${name//-/[-_.]}=="
  pin=$(grep -i -E "$pattern" requirements.lock | head -n 1 | sed 's/[ ;].*//') || true
  [[ -n $pin ]] || { echo "gpu/bundle.sh: $name is not pinned in requirements.lock" >&2; exit 2; }
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
       "${platforms[@]}" -d "$payload/wheels" "$pin" >/dev/null 2>&1; then
    # published as an sdist only: build it here, and accept it only if it is pure Python
    "$PY" -m pip wheel -q --no-deps -w "$work/built" "$pin" >/dev/null
    built=$(ls "$work"/built/*.whl)
    [[ $built == *-py3-none-any.whl ]] || { echo "gpu/bundle.sh: $pin has no wheel for Python $PYVER and is not pure Python ($built)" >&2; exit 2; }
    mv "$built" "$payload/wheels/"
  fi
done < gpu/missing-on-target.txt

# 2. data and weights, exactly as `make provision` leaves them here (MD5- and sha256-verified)
"$PY" -m arelbo provision all >/dev/null
cp resources/mnist/raw/* "$payload/resources/mnist/raw/"
cp resources/inception/*.pth "$payload/resources/inception/"

# 3. manifest, one archive, pieces
pack
echo "$(ls "$payload/wheels" | wc -l) wheels for Python $PYVER; carry the parts to the GPU node, then run the check: docs/gpu-check.md"
