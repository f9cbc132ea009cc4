#!/bin/sh
# Build the installable plugin package: type-check the sources (tests too),
# compile them to dist/ and assemble a package whose package.json points
# OpenClaw at the compiled entry (openclaw.runtimeExtensions), for the
# copying install `openclaw plugins install <dir>` and for publishing.
#
# Usage: sh gateway/scripts/build.sh [OUT_DIR]   (default gateway/dist/voice-call)
set -eu
. "$(dirname "$0")/toolchain.sh"

out=${1:-$gateway/dist/voice-call}
# Staged inside the cache, so that tsc finds @types/node there; a folder of
# this build's own, since several worktrees may share one cache.
mkdir -p "$cache/build"
work=$(mktemp -d "$cache/build/voice-call.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/voice-call
mkdir -p "$stage"
cp -R "$gateway/index.ts" "$gateway/src" "$gateway/test" "$gateway/openclaw.plugin.json" \
    "$gateway/tsconfig.json" "$gateway/tsconfig.build.json" "$stage/"
(cd "$stage" && tsc -p tsconfig.json && tsc -p tsconfig.build.json)
rm -rf "$stage/test" "$stage/tsconfig.json" "$stage/tsconfig.build.json"
node -e '
const fs = require("fs");
const [source, target] = process.argv.slice(1);
const pkg = JSON.parse(fs.readFileSync(source, "utf8"));
delete pkg.devDependencies;
delete pkg.scripts;
pkg.openclaw = { ...pkg.openclaw, runtimeExtensions: ["./dist/index.js"] };
fs.writeFileSync(target, JSON.stringify(pkg, null, 2) + "\n");
' "$gateway/package.json" "$stage/package.json"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -R "$stage" "$out"
echo "$out"
