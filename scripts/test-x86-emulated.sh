#!/usr/bin/env bash
# Checks the x86 kernel sets this machine kind's CPUs lack (AVX-VNNI, AVX-512, AVX-512 VNNI) without such a CPU:
# builds every .c file of Sources/Kernels (x86/ and arm/ too) with Tests/KernelPaths/kernel_paths_test.c and FB_EMULATE_X86, so that SIMDe's portable
# definitions of the intrinsics (Tests/KernelPaths/x86_emulated.h) stand in for the instructions and every x86 path is
# selectable, then runs it twice:
#   emulated                 all kernel sets "present": the default must be avx512-vnni, and every path must agree
#                            with the scalar path and the double-precision references;
#   emulated-fb-kernels-...  FB_KERNELS=avx2-vnni must override that choice.
# This checks what the kernels compute (lane arithmetic, tails, packing), not instruction encodings or speed; the
# native build (swift build) compiles the same code for the real instructions.
#
#   scripts/test-x86-emulated.sh --runtime
# instead builds the whole package that way (FB_EMULATE_X86=1, see Package.swift; build folder .build-emulated-x86)
# and runs the runtime's tests (parity with the reference goldens, quantized models, vision) once per kernel set:
# avx2-vnni, avx512, avx512-vnni. scripts/test.sh runs both modes.
# Exit status: 0 all passed, 1 a check failed, 3 tools missing (the message says what to install).
# Needs the Debian package libsimde-dev (scripts/setup.sh) and a clang (the Swift toolchain's; FB_X86_CC overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -m)" in
x86_64 | amd64) ;;
*) echo "test-x86-emulated: not an x86-64 machine ($(uname -m)): nothing to check here" >&2; exit 3 ;;
esac
missing=()
. scripts/toolchain-clang.sh
cc=$(toolchain_clang FB_X86_CC)
[ -n "$cc" ] && [ -x "$cc" ] || missing+=("clang (the Swift toolchain's, or FB_X86_CC)")
[ -e /usr/include/simde/x86/avx512.h ] || missing+=("libsimde-dev (/usr/include/simde)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "test-x86-emulated: missing: ${missing[*]}" >&2
    echo "test-x86-emulated: install with: sudo apt-get install -y libsimde-dev (or run scripts/setup.sh)" >&2
    exit 3
fi

if [ "${1:-}" = "--runtime" ]; then
    build=.build-emulated-x86
    if ! FB_EMULATE_X86=1 swift build --build-tests --build-path "$build" 2>&1 | tail -3; then
        echo "test-x86-emulated: the emulated build failed" >&2
        exit 1
    fi
    status=0
    for path in avx2-vnni avx512 avx512-vnni; do
        log=$(FB_KERNELS=$path swift test --skip-build --build-path "$build" --filter RuntimeTests 2>&1) || true
        # XCTest's last summary covers every test that ran; require that some ran and none failed.
        summary=$(printf '%s\n' "$log" | grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" | tail -1)
        if printf '%s' "$summary" | grep -qE "Executed [1-9][0-9]* tests?, with 0 failures"; then
            echo "runtime-test kernels=$path:$summary"
        else
            printf '%s\n' "$log" | grep -E "error:|failed" | head -20 >&2
            echo "test-x86-emulated: the runtime tests failed on the emulated $path kernels" >&2
            status=1
        fi
    done
    exit $status
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bin=$tmp/kernel_paths_test
# SIMDE_NO_NATIVE: SIMDe's own code only (its aliases would clash with the compiler's intrinsic headers); -Wno-psabi:
# the whole program is built with one ABI for its vector types.
if ! "$cc" -O2 -std=gnu11 -Wall -Werror -Wno-psabi -DFB_EMULATE_X86 -DSIMDE_NO_NATIVE -I Sources/Kernels/include \
    -I Tests/KernelPaths Sources/Kernels/*.c Sources/Kernels/x86/*.c Sources/Kernels/arm/*.c Tests/KernelPaths/kernel_paths_test.c -o "$bin" -lm -lpthread \
    2>"$tmp/cc.log"; then
    cat "$tmp/cc.log" >&2
    echo "test-x86-emulated: compilation failed ($cc)" >&2
    exit 1
fi

status=0
run() {  # label, FB_KERNELS value, test arguments...
    local label=$1 kernels=$2
    shift 2
    if ! env -u FB_KERNELS ${kernels:+FB_KERNELS=$kernels} "$bin" --label "$label" "$@"; then
        echo "test-x86-emulated: $label failed" >&2
        status=1
    fi
}
run emulated "" --expect-default avx512-vnni
run emulated-fb-kernels-avx2-vnni avx2-vnni --expect-default avx2-vnni
exit $status
