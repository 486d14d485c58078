# Sourced by the kernel test scripts: toolchain_clang OVERRIDE prints the clang to use — $OVERRIDE's value if set,
# else the Swift toolchain's (beside `swift`, or /opt/swift), else any clang on PATH — or nothing.
toolchain_clang() {
    local override=${!1:-}
    if [ -n "$override" ]; then echo "$override"; return; fi
    local c
    for c in "$(dirname "$(readlink -f "$(command -v swift 2>/dev/null || echo /nonexistent)")")/clang" \
        /opt/swift/usr/bin/clang "$(command -v clang 2>/dev/null || true)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return; fi
    done
}
