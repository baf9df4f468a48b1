# Sourced by the scripts/device_*.sh scripts, from the checkout's root.
#
# `device_setup NAME`: checks OUT (the folder that comes back) and sets $py (PYTHON, default python3), PYTHONPATH
# (the checkout), $log ($OUT/NAME_gpu.log), $tgz (the carried JPEG copy of CIFAR-10) and $work (WORK, default
# /tmp/ttq-NAME, made).
device_setup() {
  : "${OUT:?set OUT to the folder that comes back (the device tool sets it)}"
  py=${PYTHON:-python3}
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  log=$OUT/$1_gpu.log
  tgz=.device/shared/data/cifar10-jpeg.tar.gz
  work=${WORK:-/tmp/ttq-$1}
  mkdir -p "$work"
}

# `step NAME LIMIT_S COMMAND...` runs COMMAND with a time limit when STEPS (default all) names it, appending its
# output, exit status and seconds to $log.
step() {
  local name=$1 limit=$2 t0; shift 2
  [[ " ${STEPS:-all} " == *" all "* || " ${STEPS:-all} " == *" $name "* ]] || return 0
  t0=$(date +%s.%N)
  echo "== $name (limit ${limit} s): $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "== $name: exit ${PIPESTATUS[0]} after $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s" | tee -a "$log"
}
# `step_machine`: the card, driver, CPU count and torch version, as the first step of each call's log ($py: python).
step_machine() {
  step machine 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
    '"$py"' -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"'
}
