#!/usr/bin/env bash
# Checks the AArch64 kernel paths (NEON and NEON dot product) without ARM hardware: cross-compiles
# every .c file of Sources/Kernels (its x86/ and arm/ folders too) with Tests/KernelPaths/kernel_paths_test.c and runs the result under qemu-user on two
# CPU models:
#   -cpu max         has the dot-product extension: the default path must be neon-dotprod;
#   -cpu cortex-a53  ARMv8.0, no dot product: the default must be neon and neon-dotprod unselectable;
# plus FB_KERNELS=neon on -cpu max (the override). Each run prints one "kernels-test ..." line.
# Exit status: 0 all passed, 1 a check failed, 3 tools missing (the message says what to install).
# Needs the Debian packages gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user (scripts/setup.sh)
# and a clang with lld (the Swift toolchain's; override with FB_ARM_CC=/path/to/clang).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
. scripts/toolchain-clang.sh
cc=$(toolchain_clang FB_ARM_CC)
[ -n "$cc" ] && [ -x "$cc" ] || missing+=("clang (the Swift toolchain's, or FB_ARM_CC)")
qemu=$(command -v qemu-aarch64 2>/dev/null || command -v qemu-aarch64-static 2>/dev/null || true)
[ -n "$qemu" ] || missing+=("qemu-user (qemu-aarch64)")
[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] && [ -e /usr/aarch64-linux-gnu/include/stdio.h ] ||
    missing+=("libc6-dev-arm64-cross (/usr/aarch64-linux-gnu)")
compgen -G "/usr/lib/gcc-cross/aarch64-linux-gnu/*/crtbegin.o" >/dev/null || missing+=("gcc-aarch64-linux-gnu (crt files, libgcc)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "test-arm: missing: ${missing[*]}" >&2
    echo "test-arm: install with: sudo apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user" >&2
    echo "test-arm: (or run scripts/setup.sh)" >&2
    exit 3
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=$tmp/kernel_paths_test
if ! "$cc" --target=aarch64-linux-gnu -O2 -std=gnu11 -Wall -Werror -fuse-ld=lld -I Sources/Kernels/include \
    Sources/Kernels/*.c Sources/Kernels/x86/*.c Sources/Kernels/arm/*.c Tests/KernelPaths/kernel_paths_test.c -o "$bin" -lm 2>"$tmp/cc.log"; then
    cat "$tmp/cc.log" >&2
    echo "test-arm: cross-compilation failed ($cc --target=aarch64-linux-gnu)" >&2
    exit 1
fi

status=0
run() {  # label, qemu cpu, FB_KERNELS value, test arguments...
    local label=$1 cpu=$2 kernels=$3
    shift 3
    if ! env -u FB_KERNELS ${kernels:+FB_KERNELS=$kernels} "$qemu" -L /usr/aarch64-linux-gnu -cpu "$cpu" \
        "$bin" --label "$label" "$@"; then
        echo "test-arm: $label (qemu -cpu $cpu) failed" >&2
        status=1
    fi
}
run max max "" --expect-default neon-dotprod
run cortex-a53 cortex-a53 "" --expect-default neon --expect-missing neon-dotprod
run max-fb-kernels-neon max neon --expect-default neon
exit $status
