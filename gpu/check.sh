#!/usr/bin/env bash
# The GPU check, on a CUDA machine with PyTorch but no internet (docs/gpu-check.md):
#
#   bash gpu/check.sh stage    copy the bundle parts carried in .gpu-bundle/ to the staging folder
#   bash gpu/check.sh setup    stage, verify every part and file (sha256), install the wheels, place data
#   bash gpu/check.sh tests    the GPU tests (pytest -m gpu), TF32 against FP32, the benchmarks, timed
#   bash gpu/check.sh tables   MNIST Tables 3 + 4 at paper sizes (config/gpu-check.yaml), timed per job
#   bash gpu/check.sh all      setup, tests, tables
#
# Each step appends to $OUT/record.md (OUT: a folder you bring back from the node, default ./gpu-check-out):
# the date, machine, versions, what ran, how long, and the tables — to be copied to
# docs/reproductions/. The bundle comes from `make gpu-bundle` on a machine with PyPI; its parts can
# arrive in separate calls, since the staging folder outlives a call while the machine is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=${ARELBO_GPU_STAGE:-/tmp/arelbo-gpu-bundle}
BUNDLE=${ARELBO_GPU_BUNDLE:-.gpu-bundle}          # where carried parts arrive (make gpu-bundle writes it)
RESOURCES=${ARELBO_GPU_RESOURCES:-resources}      # the config's resources folder
SITE=$STAGE/site
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-check-out}
RECORD=$OUT/record.md
# Time limits (seconds) sized so that the check fits 15 minutes on a GPU node you have for a short time,
# its start-up included (docs/gpu-check.md, "Fitting 15 minutes"; tests/test_gpu_bundle.py adds them up)
TESTS_BUDGET=${ARELBO_GPU_TESTS_BUDGET:-240}     # the tests step: GPU tests, TF32 against FP32, benchmarks
TABLES_TIMEOUT=${ARELBO_GPU_TABLES_TIMEOUT:-210}  # the tables step's DAG
PLAN_TIMEOUT=45                                   # the tables step's projection against what ran
LOGS=$STAGE/logs   # each step's full output; $OUT gets record.md, costs.csv and logs.tgz: few files, easy to carry back
mkdir -p "$OUT" "$LOGS"

die() { echo "gpu/check.sh: $*" >&2; echo "**stopped:** $*" >> "$RECORD"; exit 2; }
note() { printf '%s\n' "$@" >> "$RECORD"; }
timed() {  # timed LABEL CMD...: run, log its output, record its wall time and exit status
  local label=$1; shift
  local start=$SECONDS status=0
  "$@" > "$LOGS/$label.log" 2>&1 || status=$?
  note "- $label: $((SECONDS - start)) s, exit $status"
  return $status
}

stage() {
  mkdir -p "$STAGE"
  shopt -s nullglob
  local found=0
  for part in "$BUNDLE"/part-*/; do
    cp "$part"/bundle.tgz.* "$part/SHA256SUMS" "$STAGE/"
    found=$((found + 1))
  done
  [[ -f $STAGE/SHA256SUMS ]] || die "no bundle part carried or staged: make one with 'make gpu-bundle' and carry .gpu-bundle/part-00"
  local missing
  missing=$(cd "$STAGE" && awk '{print $2}' SHA256SUMS | while read -r f; do [[ -f $f ]] || echo "$f"; done)
  echo "staged $found part(s) in $STAGE; still missing: ${missing:-none}"
}

setup() {
  stage
  local missing
  missing=$(cd "$STAGE" && awk '{print $2}' SHA256SUMS | while read -r f; do [[ -f $f ]] || echo "$f"; done)
  [[ -z $missing ]] || die "bundle pieces not staged yet: $(echo $missing) — carry each .gpu-bundle/part-NN in a call of 'bash gpu/check.sh stage' first"
  (cd "$STAGE" && sha256sum --quiet -c SHA256SUMS) || die "a bundle piece is corrupt (sha256): rebuild it with 'make gpu-bundle'"
  if [[ ! -f $STAGE/payload/.verified ]]; then
    rm -rf "$STAGE/payload"
    cat "$STAGE"/bundle.tgz.* | tar -xz -C "$STAGE"
    (cd "$STAGE/payload" && sha256sum --quiet -c MANIFEST.sha256) || die "the unpacked bundle does not match its manifest"
    touch "$STAGE/payload/.verified"
  fi
  shopt -s nullglob
  local wheels=("$STAGE"/payload/wheels/*.whl)
  if (( ${#wheels[@]} )); then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
      || die "installing the bundle's wheels failed (a wheel for another Python? bundle with --python-version)"
  fi
  mkdir -p "$RESOURCES"
  cp -R "$STAGE"/payload/resources/. "$RESOURCES"/
  echo "bundle verified and installed: ${#wheels[@]} wheels in $SITE, data in $RESOURCES"
  note "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)" "" "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
}

environment() {
  export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}
  export PYTHONUNBUFFERED=1
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || die "torch sees no usable CUDA GPU here"
}

describe() {
  note "- machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1), $(nproc) CPU cores"
  note "- versions: $("$PY" -c 'import sys, torch, torchvision, sklearn, snakemake, pytorch_fid, torch_fidelity; print(f"Python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), torchvision {torchvision.__version__}, scikit-learn {sklearn.__version__}, snakemake {snakemake.__version__}, pytorch-fid {pytorch_fid.__version__}, torch-fidelity {torch_fidelity.__version__}")')"
}

# What matters most runs first; each step gets at most its own limit and what is left of the step's
# budget (TESTS_BUDGET), so that the whole check fits 15 minutes (docs/gpu-check.md,
# "Fitting 15 minutes"). A step with under 20 s left is recorded as skipped, not started.
TESTS_STEPS=(
  "pytest-gpu 150 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py"
  "bench-tf32_precision 90 $PY benchmarks/tf32_precision.py --config config/gpu-check.yaml --epoch-images 55000"
  "bench-frechet_distance 45 $PY benchmarks/frechet_distance.py"
  "bench-train_throughput 45 $PY benchmarks/train_throughput.py"
  "bench-fid_throughput 45 $PY benchmarks/fid_throughput.py"
  "bench-section3_batched 30 $PY benchmarks/section3_batched.py"
  "bench-second_stage_batched 30 $PY benchmarks/second_stage_batched.py"
)

tests() {
  environment
  describe
  note "" "## GPU tests and benchmarks (budget $TESTS_BUDGET s)"
  local deadline=$((SECONDS + TESTS_BUDGET)) step label limit left cmd
  for step in "${TESTS_STEPS[@]}"; do
    read -r label limit cmd <<< "$step"
    left=$((deadline - SECONDS))
    if (( left < 20 )); then note "- $label: skipped (the step's budget is spent)"; continue; fi
    (( limit < left )) || limit=$left
    # shellcheck disable=SC2086 # the command's words split on purpose
    timed "$label" timeout "$limit" $cmd || true
  done
  note "" '```'
  for step in "${TESTS_STEPS[@]}"; do
    read -r label _ <<< "$step"
    [[ -f $LOGS/$label.log ]] && note "== $label" "$(grep -v Warning "$LOGS/$label.log" | tail -n 14)"
  done
  note '```'
  tar -czf "$OUT/logs.tgz" -C "$STAGE" logs
}

tables() {
  environment
  note "" "## MNIST Tables 3 + 4 at paper sizes (config/gpu-check.yaml), profiles/gpu-workstation"
  local targets=(results/gpu-check/table3.tex results/gpu-check/table4.tex)
  timed snakemake timeout "$TABLES_TIMEOUT" "$PY" -m snakemake --profile profiles/gpu-workstation \
    --configfile config/gpu-check.yaml -- "${targets[@]}" || true
  "$PY" -m arelbo costs --logs logs/gpu-check --out "$OUT/costs.csv" > "$LOGS/costs.txt" 2>&1 || true
  note "" "Measured per stage and per Table 3/4 row (arelbo costs; every job's row in costs.csv):" '```' "$(cat "$LOGS/costs.txt")" '```'
  for n in 3 4; do
    [[ -f results/gpu-check/tables/table${n}_paper.csv ]] && note "" "Table $n (reduced epochs: not comparable with the paper):" '```' "$(cat results/gpu-check/tables/table${n}_paper.csv)" '```'
  done
  "$PY" -m arelbo claims --results results/gpu-check --no-write > "$LOGS/claims.txt" 2>&1 || true
  note "" "Claims (reduced config):" '```' "$(tail -n 40 "$LOGS/claims.txt")" '```'
  # the projection of this kind checked against what just ran: per rule, planned and measured seconds
  timeout "$PLAN_TIMEOUT" "$PY" -m arelbo plan --config config/gpu-check.yaml --device "${ARELBO_DEVICE_KIND:-nvidia-h200}" \
    --cores "$(nproc)" --against logs > "$LOGS/plan.txt" 2>&1 || true
  note "" "Projected against measured (arelbo plan --against logs):" '```' "$(tail -n 40 "$LOGS/plan.txt")" '```'
  tar -czf "$OUT/logs.tgz" -C "$STAGE" logs -C "$PWD" logs/gpu-check 2>/dev/null || true
}

case ${1:-} in
  stage) stage ;;
  setup) setup ;;
  tests) tests ;;
  tables) tables ;;
  all) setup; tests; tables ;;
  *) echo "usage: bash gpu/check.sh stage|setup|tests|tables|all (see the header of gpu/check.sh)" >&2; exit 2 ;;
esac
