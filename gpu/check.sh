#!/usr/bin/env bash
# The GPU check, on a CUDA machine with PyTorch but no internet (docs/gpu-check.md):
#
#   bash gpu/check.sh stage    copy the bundle parts carried in .gpu-bundle/ to the staging folder
#   bash gpu/check.sh setup    stage, verify every part and file (sha256), install the wheels, place data
#   bash gpu/check.sh tests    the GPU tests (pytest -m gpu), TF32 against FP32, the benchmarks, timed
#   bash gpu/check.sh tables   MNIST Tables 3 + 4 at paper sizes (config/gpu-check.yaml), timed per job
#   bash gpu/check.sh all      setup, tests, tables
#   bash gpu/check.sh rehearse tests and tables on this machine's CPU at tiny sizes, with .venv's Python and
#                              no bundle (config/gpu-check-rehearsal.yaml): every step runs as it would on
#                              the GPU node (the test suite runs it, so a broken step is found before the node)
#
# The exit status is 0 only when every step succeeded; a step that failed or ran past its limit is
# named, with its exit status, in the record and on stderr.
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
REHEARSAL=0
[[ ${1:-} == rehearse ]] && REHEARSAL=1
# The check's config; a rehearsal adds its tiny CPU overlay (and writes beside, not over, a real run)
CONFIGS=(config/gpu-check.yaml)
KIND=${ARELBO_DEVICE_KIND:-nvidia-h200}
if (( REHEARSAL )); then
  CONFIGS+=(config/gpu-check-rehearsal.yaml)
  KIND=cpu-2core
  [[ -x .venv/bin/python ]] && PYTHON=${PYTHON:-.venv/bin/python}
fi
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-check-out}
RECORD=$OUT/record.md
# Time limits (seconds) sized so that the check fits 15 minutes on a GPU node you have for a short time,
# its start-up included (docs/gpu-check.md, "Fitting 15 minutes"; tests/test_gpu_bundle.py adds them up)
TESTS_BUDGET=${ARELBO_GPU_TESTS_BUDGET:-240}     # the tests step: GPU tests, TF32 against FP32, benchmarks
TABLES_TIMEOUT=${ARELBO_GPU_TABLES_TIMEOUT:-210}  # the tables step's DAG
PLAN_TIMEOUT=45                                   # the tables step's projection against what ran
if (( REHEARSAL )); then  # a CPU runs the tiny steps slower than the node runs the real ones
  TESTS_BUDGET=${ARELBO_GPU_TESTS_BUDGET:-1800} TABLES_TIMEOUT=${ARELBO_GPU_TABLES_TIMEOUT:-1800} PLAN_TIMEOUT=300
fi
LOGS=$STAGE/logs   # each step's full output; $OUT gets record.md, costs.csv and logs.tgz: few files, easy to carry back
mkdir -p "$OUT" "$LOGS"

die() { echo "gpu/check.sh: $*" >&2; echo "**stopped:** $*" >> "$RECORD"; exit 2; }
note() { printf '%s\n' "$@" >> "$RECORD"; }
FAILED=()
failed() {  # failed LABEL STATUS: a step that did not succeed, named in the record and the exit status
  local why="exit $2"
  (( $2 == 124 )) && why="stopped at its time limit (exit 124): what finished is measured"
  FAILED+=("$1: $why")
  note "  - **$1 did not succeed**: $why (its log: logs.tgz, $1.log)"
}
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
  (( REHEARSAL )) && return
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || die "torch sees no usable CUDA GPU here"
}

run_logs() {  # the run's own log folder (<logdir>/<name>-<hash>), as the workflow names it
  "$PY" -c 'import sys; from arelbo.core.config import load_config; from arelbo.core.layout import run_logs
cfg = load_config(*sys.argv[1:], check_folders=False); print(run_logs(cfg.logdir, cfg.name, cfg.outdir))' "${CONFIGS[@]}"
}

describe() {
  note "- machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)$( (( REHEARSAL )) && echo "no GPU (rehearsal)"), $(nproc) CPU cores"
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
# A rehearsal's sizes, appended to each step's command (argparse: the last value wins)
declare -A REHEARSAL_ARGS=(
  [pytest-gpu]=""
  [bench-tf32_precision]="--config config/ci.yaml --epoch-images 0 --batches 1 --batch-size 8"
  [bench-frechet_distance]="--n 300 --dim 64 --repeats 1 --resamples 2"
  [bench-train_throughput]="--steps 2 --warmup 1 --n-images 256 --datasets mnist"
  [bench-fid_throughput]="--n-samples 8 --n-reference 16 --batch-size 8"
  [bench-section3_batched]="--points 2 --images 64"
  [bench-second_stage_batched]="--models 2 --latents 256 --hidden 64"
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
    # a CPU, perhaps a slow or a busy one, runs each tiny step slower than the node runs the real one
    (( REHEARSAL )) && cmd="$cmd ${REHEARSAL_ARGS[$label]}" limit=$((limit * 10))
    (( limit < left )) || limit=$left
    # shellcheck disable=SC2086 # the command's words split on purpose
    timed "$label" timeout "$limit" $cmd || failed "$label" $?
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
  note "" "## MNIST Tables 3 + 4 ($(IFS=' '; echo "${CONFIGS[*]}")), profiles/gpu-workstation"
  local results logs
  results=$("$PY" -m arelbo config --configfile "${CONFIGS[@]}" | sed -n 's/^outdir: //p') \
    || die "arelbo cannot read the check's config (${CONFIGS[*]}): run '$PY -m arelbo config --configfile ${CONFIGS[*]}' to see why"
  logs=$(run_logs) || die "cannot name the run's log folder from ${CONFIGS[*]}"
  local targets=("$results/table3.tex" "$results/table4.tex")
  # the profile sets device=cuda; a rehearsal's command line replaces that with the CPU
  local on_cpu=()
  (( REHEARSAL )) && on_cpu=(--config device=cpu)
  timed snakemake timeout "$TABLES_TIMEOUT" "$PY" -m snakemake --profile profiles/gpu-workstation \
    --configfile "${CONFIGS[@]}" "${on_cpu[@]}" -- "${targets[@]}" || failed snakemake $?
  timed costs "$PY" -m arelbo costs --configfile "${CONFIGS[@]}" --out "$OUT/costs.csv" || failed costs $?
  note "" "Measured per stage and per Table 3/4 row (arelbo costs; every job's row in costs.csv):" '```' "$(cat "$LOGS/costs.log")" '```'
  for n in 3 4; do
    [[ -f $results/tables/table${n}_paper.csv ]] && note "" "Table $n (reduced epochs: not comparable with the paper):" '```' "$(cat "$results/tables/table${n}_paper.csv")" '```'
  done
  timed claims "$PY" -m arelbo claims --results "$results" --no-write || failed claims $?
  note "" "Claims (reduced config):" '```' "$(tail -n 40 "$LOGS/claims.log")" '```'
  # the projection of this kind checked against what just ran: per rule, planned and measured seconds
  timed plan timeout "$PLAN_TIMEOUT" "$PY" -m arelbo plan --configfile "${CONFIGS[@]}" --device "$KIND" \
    --cores "$(nproc)" --against "$logs" || failed plan $?
  note "" "Projected against measured (arelbo plan --against $logs):" '```' "$(tail -n 40 "$LOGS/plan.log")" '```'
  tar -czf "$OUT/logs.tgz" -C "$STAGE" logs -C "$PWD" "$logs" || failed logs.tgz $?
}

finish() {  # the check's exit status: 0 only when every step succeeded
  if (( ${#FAILED[@]} )); then
    note "" "**Steps that did not succeed:**" "${FAILED[@]/#/- }"
    printf 'gpu/check.sh: a step did not succeed: %s\n' "${FAILED[@]}" >&2
    exit 1
  fi
  note "" "Every step succeeded."
}

case ${1:-} in
  stage) stage ;;
  setup) setup ;;
  tests) tests ;;
  tables) tables ;;
  all) setup; tests; tables ;;
  rehearse) note "# GPU check rehearsed on the CPU, $(date -u +%Y-%m-%dT%H:%MZ)"; tests; tables ;;
  *) echo "usage: bash gpu/check.sh stage|setup|tests|tables|all|rehearse (see the header of gpu/check.sh)" >&2; exit 2 ;;
esac
finish
