#!/usr/bin/env bash
# The GPU and 16-core rows of issues 16 and 17, in one call of a lent
# device machine (an H200 host with 16 cores), within its 10-minute limit.
#
# A lent machine has its own python3 with JAX (CUDA), NumPy, msgpack and
# psutil, but not pyzmq, orjson or py-spy, and it cannot download: bring them
# as wheels (`make device-wheels` fills .whl/), and carry .whl with the call:
#
#     run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=600)
#
# Every table goes to $OUT/results.txt (progress and errors to $OUT/log.txt,
# py-spy's view of the threads during a GPU step to $OUT/pyspy.txt), and the
# tables are printed again at the end. The steps run in order of what the
# issues need most, each under a timeout that keeps the whole within about
# 9 minutes; a step that would not fit is skipped and said so. Nothing here
# changes the GPU's settings (clocks are only read, by train_step).
#
# Here, without a GPU: DEVICE_CHECK_PLATFORM=cpu DEVICE_CHECK_QUICK=1 bash
# benchmarks/device_check.sh runs the same steps, small, on this machine's CPU.
set -u
cd "$(dirname "$0")/.." || exit 1

OUT=${OUT:-$(mktemp -d /tmp/roxxel-device-check.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
LOG=$OUT/log.txt
: >"$RESULTS"
: >"$LOG"
PLATFORM=${DEVICE_CHECK_PLATFORM:-gpu}
QUICK=${DEVICE_CHECK_QUICK:-}
TOTAL=${DEVICE_CHECK_SECONDS:-540}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# The interpreter's own bin first: a virtual environment's py-spy.
PATH="$(cd "$(dirname "$(command -v "$PY")")" && pwd):$PATH"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/roxxel-site .whl/*.whl >>"$LOG" 2>&1 || { cat "$LOG"; exit 1; }
    export PYTHONPATH=/tmp/roxxel-site
    export PATH=/tmp/roxxel-site/bin:$PATH
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! "$PY" -c "import zmq, msgpack, orjson, psutil, roxxel, aggregator" >>"$LOG" 2>&1; then
    echo "device_check: a package is missing (make device-wheels, then carry .whl):"
    tail -5 "$LOG"
    exit 1
fi

# step NAME CAP COMMAND...: run COMMAND with its stdout into the results,
# under min(CAP, what is left of TOTAL) seconds; skipped under 20 s left.
step() {
    local name=$1 cap=$2 left rc
    shift 2
    left=$((TOTAL - SECONDS))
    [ "$cap" -lt "$left" ] || cap=$left
    {
        echo
        echo "== $name ($(date -u +%H:%M:%S) UTC, at most ${cap} s): $*"
    } >>"$RESULTS"
    if [ "$cap" -lt 20 ]; then
        echo "skipped: ${left} s left of ${TOTAL}" >>"$RESULTS"
        return
    fi
    echo "== $name: $*" >>"$LOG"
    # Through bash, so that a step may be one of the functions below.
    timeout "$cap" bash -c '"$@"' step "$@" >>"$RESULTS" 2>>"$LOG"
    rc=$?
    [ "$rc" -eq 0 ] || echo "!! $name: exit code $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')" >>"$RESULTS"
}

machine() {
    echo "host: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB; $("$PY" --version)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
    "$PY" -c 'import importlib.metadata as m
wanted = {"jax", "jaxlib", "numpy", "pyzmq", "msgpack", "orjson", "psutil"}
print("; ".join(sorted(f"{d.name} {d.version}" for d in m.distributions() if d.name.lower() in wanted)))'
    git log -1 --format='roxxel at %h (%cd)' 2>/dev/null || true
}

# py-spy's samples of a GPU step with roxxel logging (on-CPU samples only):
# per thread, where it was found most.
profile() {
    command -v py-spy >/dev/null || { echo "py-spy is not installed"; return 0; }
    local raw=$OUT/pyspy.raw pid
    # Later options win: the caller's (size, quick) after these defaults.
    "$PY" -m benchmarks.train_step --platform "$PLATFORM" --steps 300 --rounds 6 "$@" \
        >/dev/null 2>>"$LOG" &
    pid=$!
    sleep "$PROFILE_AFTER" # the import, the compile and the untimed round first
    py-spy record --pid "$pid" --duration "$PROFILE_FOR" --rate 250 --threads --subprocesses \
        --format raw --output "$raw" >>"$LOG" 2>&1 || echo "py-spy record failed (see log.txt)"
    wait "$pid"
    [ -s "$raw" ] && "$PY" -m benchmarks.stack_summary "$raw" >"$OUT/pyspy.txt" && rm -f "$raw"
    echo "py-spy: $OUT/pyspy.txt"
}

PROFILE_AFTER=25
PROFILE_FOR=15
if [ -n "$QUICK" ]; then
    # Every size as small as tiny: a CPU takes ~70 ms for one medium step.
    SMALL=(--d 256 --layers 2 --batch 64)
    TS=(--steps 20 --rounds 2 "${SMALL[@]}")
    PROFILE_AFTER=8
    PROFILE_FOR=4
    CT=(--quick)
    CALLER=(--quick)
    CLOSE=(--quick)
else
    SMALL=()
    TS=()
    CT=()
    CALLER=()
    CLOSE=()
fi
export OUT LOG PLATFORM PY PROFILE_AFTER PROFILE_FOR
export -f machine profile

step machine 30 machine
# Issue 17: the GPU rows (each size ~30-60 s with JAX's start and compile).
step "train_step medium" 150 "$PY" -m benchmarks.train_step --platform "$PLATFORM" --size medium "${TS[@]}"
step "train_step small" 100 "$PY" -m benchmarks.train_step --platform "$PLATFORM" --size small "${TS[@]}"
step "train_step tiny" 100 "$PY" -m benchmarks.train_step --platform "$PLATFORM" --size tiny "${TS[@]}"
# Issue 16: the collector on 16 cores, without and with sink processes.
step "collector_throughput, sink processes off" 90 "$PY" -m benchmarks.collector_throughput --sink-processes off "${CT[@]}"
step "collector_throughput, sink processes on" 90 "$PY" -m benchmarks.collector_throughput --sink-processes on "${CT[@]}"
step "py-spy during a GPU step" 70 profile --size medium "${SMALL[@]}"
step "caller cost" 90 "$PY" -m benchmarks "${CALLER[@]}"
step "close_pending" 60 "$PY" -m benchmarks.close_pending "${CLOSE[@]}"

echo "device_check: ${SECONDS} s; files in $OUT"
cat "$RESULTS"
