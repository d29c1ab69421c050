#!/usr/bin/env bash
# One prepared run for a GPU machine (H100/H200; about 10 minutes; no network there).
#
#   bash benchmarks/gpu_check.sh
#
# Parts, in order of priority, each under its own time limit and never past the total budget
# (so one hang cannot eat the run and the table is always written):
#   install            pip install --no-deps --no-build-isolation -e . (builds the C++ executor;
#                      skipped when this tree is already installed), after the wheels in .whl/
#   cuda-tests         pytest tests/kernels on CUDA: every kernel compiled for real, against the
#                      float64 loops
#   judge-benchmark    benchmarks/test_bench_judge.py: judge prefill at Qwen3-8B shape (issue 13.3)
#   kernel-benchmarks  gae+ppo, fused_ppo_loss (against Liger), yon_reward: their targets
#   decode-benchmark   benchmarks/test_bench_decode.py (issue 13.2), when the tree has it
#   models, trainer    a 20-step GRPO run on CUDA: a Galactica-125M-shaped OPT student and a small
#                      Qwen3-vocabulary judge, random weights, built and saved locally
# Then one markdown table: $OUT/gpu_check.md (also printed last), the whole log
# $OUT/gpu_check.log, and every benchmark's JSON/CSV with the trainer's summary in
# $OUT/gpu_check_results.tar.gz.
#
# Without CUDA the CUDA parts are recorded as "skipped: no CUDA" and the table is still written.
# Environment:
#   OUT                 results folder (default benchmarks/results/gpu_check)
#   PYTHON              interpreter (default python3)
#   GPU_CHECK_BUDGET_S  seconds for all the parts together (default 540)
#   GPU_CHECK_ON_CPU=1  run the CUDA parts on the CPU at smoke sizes (checks the commands)
#
# Wheels for what the GPU machine lacks (its image has torch, triton, transformers, pybind11,
# sympy, pytest, accelerate, matplotlib; not liger-kernel, the fused_ppo_loss baseline), fetched
# beforehand on a machine with network into the ignored folder .whl/ and carried with the tree:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl liger-kernel==0.8.5
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-$ROOT/benchmarks/results/gpu_check}
BUDGET=${GPU_CHECK_BUDGET_S:-540}
RESERVE=25  # seconds kept back for the table
START=$(date +%s)
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
PARTS=$WORK/parts.tsv
LOG=$OUT_DIR/gpu_check.log
: > "$PARTS"
: > "$LOG"
export RLKD_BENCH_DIR=$WORK/results PYTHONUNBUFFERED=1
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # `benchmarks` importable as a package

say() { echo "$*" | tee -a "$LOG"; }
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(echo "$4" | tr '\t|' '  ')" >> "$PARTS"; }

CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>>"$LOG" || echo 0)
ON_CPU=${GPU_CHECK_ON_CPU:-}
say "gpu_check: $(date -u '+%Y-%m-%d %H:%M UTC'), CUDA=$CUDA, budget ${BUDGET}s, python $($PY -V 2>&1)"
command -v nvidia-smi > /dev/null && nvidia-smi >> "$LOG" 2>&1

# part NAME LIMIT_S NEEDS_CUDA CMD...: runs CMD under min(LIMIT_S, what is left) seconds.
part() {
    local name=$1 limit=$2 needs_cuda=$3
    shift 3
    if [[ $needs_cuda == 1 && $CUDA != 1 && -z $ON_CPU ]]; then
        row "$name" "skipped: no CUDA" 0 ""
        say "== $name: skipped: no CUDA"
        return 0
    fi
    local left=$((BUDGET - RESERVE - ($(date +%s) - START)))
    if ((left < 15)); then
        row "$name" "skipped: out of time" 0 "budget ${BUDGET}s spent"
        say "== $name: skipped: out of time"
        return 0
    fi
    ((limit > left)) && limit=$left
    say "== $name (limit ${limit}s): $*"
    local t0 rc status log=$WORK/$name.log
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    cat "$log" >> "$LOG"
    if ((rc == 124 || rc == 137)); then
        status="timed out after ${limit}s"
    elif ((rc != 0)); then
        status="failed (exit $rc)"
    else
        status="ok"
    fi
    # The last non-empty line: pytest's summary, or the command's own last word.
    row "$name" "$status" "$(($(date +%s) - t0))" "$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-200)"
    say "== $name: $status"
}

# --- install -------------------------------------------------------------------------------
if compgen -G ".whl/*.whl" > /dev/null; then
    if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" .whl/*.whl >> "$LOG" 2>&1; then
        export PYTHONPATH=$PYTHONPATH:$WORK/site
        row wheels ok 0 "$(cd .whl && ls -- *.whl | tr '\n' ' ')"
    else
        row wheels "failed" 0 "see gpu_check.log"
    fi
else
    row wheels "none carried" 0 "no .whl/: Liger rows of the fused_ppo_loss table will be empty"
fi
INSTALLED=$($PY - 2>>"$LOG" << 'EOF'
import pathlib, rlkd_fast, rlkd_fast._executor  # noqa: F401  (the C++ executor is built)
here = pathlib.Path.cwd().resolve()
print(int(pathlib.Path(rlkd_fast.__file__).resolve().is_relative_to(here)))
EOF
)
if [[ $INSTALLED == 1 ]]; then
    row install "ok: this tree is already installed" 0 ""
else
    part install 240 0 $PY -m pip install --no-index --no-deps --no-build-isolation -e .
fi

# --- CUDA tests and benchmarks -----------------------------------------------------------------
part cuda-tests 150 1 $PY -m pytest tests/kernels -q -x -p no:cacheprovider
part judge-benchmark 150 1 $PY -m pytest benchmarks/test_bench_judge.py -q -s -p no:cacheprovider
part kernel-benchmarks 150 1 $PY -m pytest benchmarks/test_bench_gae_ppo.py \
    benchmarks/test_bench_logits.py benchmarks/test_bench_yon.py -q -s -p no:cacheprovider
if [[ -f benchmarks/test_bench_decode.py ]]; then
    part decode-benchmark 120 1 $PY -m pytest benchmarks/test_bench_decode.py -q -s \
        -p no:cacheprovider
else
    row decode-benchmark "not run" 0 "benchmarks/test_bench_decode.py is not in this tree"
fi

# --- a 20-step trainer run on CUDA ---------------------------------------------------------------
if [[ $CUDA == 1 ]]; then
    SIZE=() RUN=(device=cuda rl_steps=20 rollout_batch=8 grpo_group=8 max_new_tokens=256
                 max_eval=16)
else  # the CPU check: the same command line at tiny sizes
    SIZE=(--small) RUN=(device=cpu rl_steps=2 rollout_batch=2 grpo_group=4 max_new_tokens=16
                        max_eval=4)
fi
part models 90 1 $PY benchmarks/gpu_models.py "$WORK/models" "${SIZE[@]}"
if [[ -f $WORK/models/judge/config.json || ($CUDA != 1 && -z $ON_CPU) ]]; then
    part trainer 180 1 $PY -m rlkd_fast.train "output_dir=$WORK/run" "cache_dir=$WORK/cache" \
        "student=$WORK/models/student" "judge=$WORK/models/judge" stages=grpo coef_vr=0.5 \
        coef_yon=0.5 max_train=512 max_unlabeled=512 save_every=1000 progress=false "${RUN[@]}"
else
    row trainer "skipped" 0 "no models (see the models row)"
fi

# --- the table -------------------------------------------------------------------------------
mkdir -p "$RLKD_BENCH_DIR"
[[ -f $WORK/run/summary.json ]] && cp "$WORK/run/summary.json" "$RLKD_BENCH_DIR/trainer_summary.json"
$PY benchmarks/gpu_report.py "$PARTS" "$RLKD_BENCH_DIR" "$WORK/run" "$OUT_DIR/gpu_check.md" \
    2>> "$LOG" | tee -a "$LOG" || say "gpu_check: the report failed; parts: $(cat "$PARTS")"
tar czf "$OUT_DIR/gpu_check_results.tar.gz" -C "$WORK" results parts.tsv 2>> "$LOG"
say "gpu_check: done in $(($(date +%s) - START))s; table in $OUT_DIR/gpu_check.md"
