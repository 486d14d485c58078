#!/usr/bin/env bash
# Executed-instruction counts of the AArch64 batched products under qemu-user, per multiply-add: a proxy for their
# speed where no ARM hardware is at hand (closest on in-order cores such as the Cortex-A53; no cache or pipeline model).
#   scripts/arm-insns.sh [ROWS COLS]          default 1024 1024
# For q4 and q8 and each of: the float route (FB_BATCHED=off) and the int8 route on plain NEON (qemu -cpu cortex-a53),
# and the int8 route with the dot product (-cpu max), runs one product with 16 and with 64 tokens and prints the
# difference per multiply-add, which leaves out the setup (quantizing the weights) both runs share.
# Needs what scripts/test-arm.sh needs; builds in a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/toolchain-clang.sh
cc=$(toolchain_clang FB_ARM_CC)
rows=${1:-1024} cols=${2:-1024}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${CC:-cc}" -shared -fPIC -O2 -o "$tmp/count.so" scripts/arm-insns/count_plugin.c
"$cc" --target=aarch64-linux-gnu -O2 -std=gnu11 -fuse-ld=lld -I Sources/Kernels/include Sources/Kernels/*.c \
    scripts/arm-insns/product.c -o "$tmp/product" -lm
count() {  # cpu, FB_KERNELS, FB_BATCHED, type, tokens
    env -u FB_KERNELS -u FB_BATCHED ${2:+FB_KERNELS=$2} FB_BATCHED=$3 qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$1" \
        -plugin "$tmp/count.so" "$tmp/product" "$4" "$rows" "$cols" "$5" 2>&1 >/dev/null | sed -n 's/^insns //p'
}
printf '%-4s %-34s %s\n' type "path (route)" "instructions per multiply-add"
for type in q4 q8; do
    for variant in "cortex-a53 neon off float" "cortex-a53 neon int8 int8" "max neon-dotprod int8 int8"; do
        set -- $variant
        a=$(count "$1" "$2" "$3" $type 16) b=$(count "$1" "$2" "$3" $type 64)
        awk -v t=$type -v p="$2 ($4)" -v a="$a" -v b="$b" -v m=$((48 * rows * cols)) \
            'BEGIN { printf "%-4s %-34s %.3f\n", t, p, (b - a) / m }'
    done
done
