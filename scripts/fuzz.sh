#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input with libFuzzer under AddressSanitizer:
#
#   scripts/fuzz.sh TARGET SECONDS      TARGET: fbm safetensors config tokenizer npy image request, or all (each in turn)
#
# Builds fbfuzz (Sources/fbfuzz) into .build-fuzz with coverage and ASan. Seeds: Tests/Fixtures/fuzz/seeds, the
# tiny checkpoint's files, a .fbm converted from it, and every reproducer in Tests/Fixtures/fuzz/regressions; the
# corpus grows in .build-fuzz/corpus. A crash, a leak, an input that takes over 10 s or an allocation over 1 GB
# fails the run and leaves the input in .build-fuzz/artifacts: fix it, put the input in
# Tests/Fixtures/fuzz/regressions/TARGET/, and the test suite replays it from then on (FuzzCorpusTests).
# The mutation sequence is fixed (-seed, FBFUZZ_SEED to change it), so a run from an empty corpus repeats what CI
# does; a longer run here covers CI's 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."
all="fbm safetensors config tokenizer npy image request"
if [ $# -ne 2 ] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh TARGET|all SECONDS   (targets: $all)" >&2; exit 64
fi
targets=$1; seconds=$2
[ "$targets" = all ] && targets=$all
for t in $targets; do
    [[ " $all " == *" $t "* ]] || { echo "scripts/fuzz.sh: unknown target '$t' (targets: $all)" >&2; exit 64; }
done

swift build --build-path .build-fuzz --product fbfuzz --sanitize=fuzzer --sanitize=address \
    -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING 2>&1 | grep -v "ld.gold: warning" | tail -1
fuzzer=.build-fuzz/debug/fbfuzz
tiny=Tests/Fixtures/firebolt-tiny
work=.build-fuzz/work
mkdir -p "$work" .build-fuzz/artifacts

# Seeds that are built, not stored: the tiny checkpoint converted to .fbm (4 bits, both grids: q4nl and q4; zstd) by
# the plain build.
if [[ " $targets " == *" fbm "* ]] && [ ! -s "$work/seed-fbm/tiny-q4-uniform.fbm" ]; then
    swift build -Xcc -O3 --product fbconvert 2>&1 | tail -1   # the flags of scripts/test.sh: no rebuild
    mkdir -p "$work/seed-fbm"
    .build/debug/fbconvert -q --bits 4 -o "$work/seed-fbm/tiny-q4.fbm" "$tiny"
    .build/debug/fbconvert -q --bits 4 --grid uniform -o "$work/seed-fbm/tiny-q4-uniform.fbm" "$tiny"
fi

status=0
for t in $targets; do
    seeds=(); max_len=()
    case $t in
        fbm)       seeds=("$work/seed-fbm"); max_len=(-max_len=400000) ;;
        config)    seeds=("$work/seed-config"); mkdir -p "$work/seed-config"; cp "$tiny/config.json" models/firebolt-shapes/config.json "$work/seed-config/" 2>/dev/null || cp "$tiny/config.json" "$work/seed-config/" ;;
        tokenizer) seeds=("$work/seed-tokenizer"); mkdir -p "$work/seed-tokenizer"
                   cp "$tiny/tokenizer.json" "$work/seed-tokenizer/tiny.json"
                   cp models/firebolt-shapes/tokenizer.json "$work/seed-tokenizer/shapes.json" ;;
        npy)       seeds=(Tests/Fixtures/fuzz/seeds/npy) ;;
        *)         seeds=("Tests/Fixtures/fuzz/seeds/$t") ;;
    esac
    [ -d "Tests/Fixtures/fuzz/regressions/$t" ] && seeds+=("Tests/Fixtures/fuzz/regressions/$t")
    mkdir -p ".build-fuzz/corpus/$t"
    echo "fuzzing $t for $seconds s"
    if ! FBFUZZ_TARGET=$t FBFUZZ_CHECKPOINT=$tiny TMPDIR=$work \
        "$fuzzer" -seed="${FBFUZZ_SEED:-1}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -artifact_prefix=".build-fuzz/artifacts/$t-" -print_final_stats=1 "${max_len[@]}" \
        ".build-fuzz/corpus/$t" "${seeds[@]}" > ".build-fuzz/$t.log" 2>&1; then
        echo "scripts/fuzz.sh: $t FAILED (log: .build-fuzz/$t.log; input: .build-fuzz/artifacts/$t-*)" >&2
        grep -E "ERROR|SUMMARY|Test unit written" ".build-fuzz/$t.log" | head -5 >&2
        status=1
    else
        grep -E "^stat::number_of_executed_units|^Done" ".build-fuzz/$t.log" | tail -1
    fi
done
exit $status
