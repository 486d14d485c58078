#!/usr/bin/env bash
# Installs the Debian packages the project builds against (needs root or sudo). Safe to run again.
set -euo pipefail
# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user: scripts/test-arm.sh (the ARM kernel tests);
# libsimde-dev: scripts/test-x86-emulated.sh (the AVX-VNNI / AVX-512 kernel tests).
# libmicrohttpd-dev: fbserve's HTTP; curl, python3-venv: its tests (scripts/test-openai-client.sh installs the pinned
# OpenAI Python client into a venv).
packages=(pkg-config libzstd-dev libpng-dev libturbojpeg0-dev libmicrohttpd-dev
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libsimde-dev curl python3-venv)
if [ "${1:-}" = "--list" ]; then echo "${packages[@]}"; exit 0; fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (Swift 6 toolchain needed)" >&2; exit 1; }
