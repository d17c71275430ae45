#!/usr/bin/env bash
# The GPU checks in one go, on a machine with CUDA: what the machine is, the card / train ratio
# (bench/e2e.py --ratio --device cuda), the split-learning overhead on the GPU, local and over
# MPI (bench/overhead.py --device cuda), then the test suite (device `auto` is CUDA there).
#
# Usage, from the repo root, with slsec installed in the python on PATH (`pip install -e .`,
# mpiexec beside that python) and pytest-xdist for the suite:
#
#     bash bench/gpu.sh [LOGDIR]          # logs to LOGDIR (default gpu-logs), a summary last
#
# Every step runs under its own time limit (seconds, below), so that one slow or hung step
# cannot eat the others; a step's limit, its exit status and the tail of its log are printed.
# A limit of 0 skips the step (CARD_LIMIT=0 ...); REPS and RESNET_REPS set the overhead's.
set -uo pipefail
out=${1:-gpu-logs}
mkdir -p "$out"
py=${PYTHON:-python3}
mpiexec="$(dirname "$(command -v "$py")")/mpiexec"
dev=${DEVICE:-cuda}
workers=${WORKERS:-$(( $(nproc) - 1 ))}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MPLBACKEND=Agg PYTHONWARNINGS=ignore

summary=()
step() {   # step NAME LIMIT_S TAIL_LINES COMMAND...
  local name=$1 limit=$2 lines=$3
  shift 3
  if [ "$limit" = 0 ]; then summary+=("$name: skipped"); return; fi
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  summary+=("$name: exit $rc in $((SECONDS - t0)) s (limit $limit s)")
  echo "== $name: exit $rc, $((SECONDS - t0)) s"
  tail -n "$lines" "$out/$name.log"
}

step machine 60 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
  nproc; $py -c 'import torch, torchvision, mpi4py.MPI as M; \
  print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(0), \
  M.Get_library_version().splitlines()[0])'"
step card "${CARD_LIMIT:-100}" 14 "$py" bench/e2e.py --ratio --reps 1 --device "$dev" --keep
step overhead "${OVERHEAD_LIMIT:-80}" 12 "$py" bench/overhead.py --device "$dev" --reps "${REPS:-3}" \
  --resnet-reps "${RESNET_REPS:-2}"
step overhead-mpi "${MPI_LIMIT:-60}" 8 "$mpiexec" -n 2 "$py" bench/overhead.py --mpi --device "$dev" \
  --reps "${REPS:-3}"
step suite "${SUITE_LIMIT:-250}" 40 "$py" -m pytest -q -n "$workers" --dist load --timeout 200 \
  -p no:randomly ${SUITE_ARGS:-}
printf '%s\n' "${summary[@]}"
