#!/usr/bin/env bash
# Executed-instruction counts of AArch64 kernels under qemu-user: a proxy for their speed where no ARM hardware is at
# hand (closest on in-order cores such as the Cortex-A53; no cache or pipeline model).
#   scripts/arm-insns.sh [ROWS COLS]          default 1024 1024
# Prints, per multiply-add (products) or per element (element-wise ops):
#   q4 / q8 batched products: the float route (FB_BATCHED=off) and the int8 route on plain NEON (qemu -cpu
#     cortex-a53), the int8 route with the dot product (-cpu max); each from one product with 16 and one with 64
#     tokens, whose difference leaves out the setup (quantizing the weights) both share;
#   attention's f32 products at the vision tower's size (Q Kᵀ, P V: 256 x 256 x 64), decode attention over f32 and
#     f16 caches, and GELU, SiLU-and-multiply and softmax: the portable C (FB_KERNELS=scalar) against NEON, each from 1
#     and 3 repeats.
# Needs what scripts/test-arm.sh needs; builds in a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/toolchain-clang.sh
cc=$(toolchain_clang FB_ARM_CC)
rows=${1:-1024} cols=${2:-1024}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${CC:-cc}" -shared -fPIC -O2 -o "$tmp/count.so" scripts/arm-insns/count_plugin.c
"$cc" --target=aarch64-linux-gnu -O2 -std=gnu11 -fuse-ld=lld -I Sources/Kernels/include Sources/Kernels/*.c Sources/Kernels/x86/*.c Sources/Kernels/arm/*.c \
    scripts/arm-insns/product.c -o "$tmp/product" -lm
count() {  # cpu, FB_KERNELS, FB_BATCHED, product arguments...
    local cpu=$1 kernels=$2 batched=$3
    shift 3
    env -u FB_KERNELS -u FB_BATCHED ${kernels:+FB_KERNELS=$kernels} ${batched:+FB_BATCHED=$batched} \
        qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$cpu" -plugin "$tmp/count.so" "$tmp/product" "$@" 2>&1 >/dev/null |
        sed -n 's/^insns //p'
}
per() { awk -v a="$2" -v b="$3" -v m="$4" -v label="$1" 'BEGIN { printf "%-44s %.3f\n", label, (b - a) / m }'; }

echo "batched products, instructions per multiply-add"
for type in q4 q8; do
    for variant in "cortex-a53 neon off float" "cortex-a53 neon int8 int8" "max neon-dotprod int8 int8"; do
        set -- $variant
        per "$type $2 ($4 route)" "$(count "$1" "$2" "$3" $type "$rows" "$cols" 16)" \
            "$(count "$1" "$2" "$3" $type "$rows" "$cols" 64)" $((48 * rows * cols))
    done
done
echo "attention's f32 products (256 x 256 x 64), instructions per multiply-add"
for op in qk pv; do
    for kernels in scalar neon; do
        per "$op $kernels" "$(count cortex-a53 $kernels "" $op 1)" "$(count cortex-a53 $kernels "" $op 3)" $((2 * 256 * 256 * 64))
    done
done
echo "decode attention (2 heads of 64, 2048 positions; f32 and f16 cache), instructions per multiply-add"
for op in attend attend16; do
    for kernels in scalar neon; do
        per "$op $kernels" "$(count cortex-a53 $kernels "" $op 1)" "$(count cortex-a53 $kernels "" $op 3)" $((2 * 2 * 2048 * 64 * 2))
    done
done
echo "element-wise ops, instructions per element"
for op in gelu silu softmax; do
    for kernels in scalar neon; do
        per "$op $kernels" "$(count cortex-a53 $kernels "" $op 1)" "$(count cortex-a53 $kernels "" $op 3)" $((2 * 65536))
    done
done
