#!/usr/bin/env bash
# The GPU figures of the extractor, video and bulk issues, in one run on a machine with an NVIDIA
# GPU and onnxruntime-gpu (see README, "GPU"). Each bench has a time limit of its own, so one
# that hangs or fails leaves the others' figures standing.
#
#   FACEGRID_BENCH_MODELS=DIR [STEPS="facen extractor extractors streams streams4 enroll enroll4"] bash bench/gpu_figures.sh [LOG_DIR]
#
# FACEGRID_BENCH_MODELS holds a built bundle (or the packages to build one from, through
# FACEGRID_MODEL_CACHE). Each bench's output goes to LOG_DIR/NAME.log as well as the terminal.
set -u
cd "$(dirname "$0")"
logs="${1:-.}"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
cuda=(--setting FACEGRID_EXTRACTOR_DEVICE=cuda --setting FACEGRID_EXTRACTOR_THREADS=4)

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep the log
    local name=$1 limit=$2
    shift 2
    [[ " ${STEPS:-facen extractor extractors streams streams4 enroll enroll4} " == *" $name "* ]] || return 0
    echo "== $name: $* (limit ${limit} s)"
    local started=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'

# Extractor: the model alone by batch size, then the gRPC service with concurrent callers.
step facen 150 python3 facen_throughput.py --device cuda --batch 1 8 32 128 512 1024 --seconds 2
step extractor 120 python3 extractor_service.py --device cuda --clients 16 64 --chips 32 \
    --model-batch 512 --seconds 5
# The same with 8 extractor processes sharing the GPU: how far processes carry one machine.
step extractors 150 python3 extractor_service.py --device cuda --processes 8 --clients 64 \
    --chips 32 --model-batch 512 --seconds 5
# Video: 720p@25 streams one worker sustains, detection on the GPU.
step streams 200 python3 video_streams.py "${cuda[@]}" --detect-every 3 --scale 0.5 \
    --streams 16 32 48 64 --seconds 16
step streams4 200 python3 video_streams.py "${cuda[@]}" --setting FACEGRID_EXTRACTORS=4 \
    --detect-every 3 --scale 0.5 --streams 16 32 48 64 --seconds 16
# Bulk: mass-enroll against the one-machine stack with the extractor on the GPU; a snapshot of
# the processes' CPU use halfway through shows what limits it. Then with 4 extractor processes
# (community mode's limit). All steps take about 20 minutes: pick some with STEPS.
[[ " ${STEPS:-enroll} " == *" enroll "* ]] && (sleep 40 && top -b -n 1 -w 200 | head -30 >"$logs/enroll-top.log") &
step enroll 180 python3 mass_enroll.py "${cuda[@]}" --images 3000 --parallel 64 \
    --kill-images 0 --kills 0
step enroll4 180 python3 mass_enroll.py "${cuda[@]}" --setting FACEGRID_EXTRACTORS=4 --setting FACEGRID_GATEWAYS=4 \
    --images 3000 --parallel 64 --kill-images 0 --kills 0
wait
cat "$logs/enroll-top.log" 2>/dev/null
