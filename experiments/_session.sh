# Shared by the GPU session scripts (source it after setting DEADLINE): a deadline clock, a log line, the output
# folder and the environment every stage runs in.
START=$(date +%s)
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=python3
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
say() { echo "[$(date +%T) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/checks.log"; }
environment() {  # the GPU, torch and CUDA versions, into checks.log
  say "environment"
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    nproc; } >> "$OUT/checks.log" 2>&1
}
