# Sourced by build.sh and test.sh (POSIX sh): installs what the shim's build
# and tests need -- Node 24, OpenClaw and TypeScript, exactly as pinned in
# gateway/package.json and package-lock.json -- into the project's cache
# folder .cache/openclaw-<version>/ (never system-wide), reinstalling only
# when the lockfile changed, and puts that Node first on PATH.
#
# Sets: gateway (the gateway/ folder), cache (the install folder).

gateway=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "gateway: node and npm (Node >= 18) are needed to install the shim's toolchain" >&2
    exit 1
fi
openclaw_version=$(node -p 'require(process.argv[1]).devDependencies.openclaw' "$gateway/package.json")
cache=${VOICECALLD_CACHE:-$gateway/../.cache}/openclaw-$openclaw_version
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

if ! cmp -s "$gateway/package-lock.json" "$cache/.installed-lock" \
    || [ ! -x "$cache/node_modules/.bin/node" ] || [ ! -x "$cache/node_modules/.bin/openclaw" ]; then
    echo "gateway: installing Node 24 and OpenClaw $openclaw_version into $cache (once)" >&2
    rm -f "$cache/.installed-lock"
    cp "$gateway/package.json" "$gateway/package-lock.json" "$cache/"
    # OpenClaw's own install script refuses Node < 24, so install without
    # scripts, fetch the pinned Node first, then run the scripts with it.
    (cd "$cache" \
        && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
        && npm rebuild node --loglevel=error \
        && PATH="$cache/node_modules/.bin:$PATH" npm rebuild --loglevel=error) >&2
    cp "$gateway/package-lock.json" "$cache/.installed-lock"
fi
PATH="$cache/node_modules/.bin:$PATH"
export PATH
