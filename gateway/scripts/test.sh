#!/bin/sh
# Every test of the gateway shim: installs the pinned toolchain into the
# project cache (see toolchain.sh), builds the plugin package, then runs the
# Node test suites -- the AMP module, the plugin against a recording api and
# the real daemon, and the plugin inside the real OpenClaw.
#
# VOICECALLD_VENV: the daemon's virtualenv (default ../.venv from gateway/),
# made by `make`; its bin/ holds twistd and voicecall.
set -eu
. "$(dirname "$0")/toolchain.sh"

VOICECALLD_VENV=${VOICECALLD_VENV:-$gateway/../.venv}
if [ ! -x "$VOICECALLD_VENV/bin/twistd" ] || [ ! -x "$VOICECALLD_VENV/bin/voicecall" ]; then
    echo "gateway: no voicecalld in $VOICECALLD_VENV (run make first, or set VOICECALLD_VENV)" >&2
    exit 1
fi
VOICECALLD_VENV=$(cd "$VOICECALLD_VENV" && pwd)
# The built package goes to a folder of this run's own: several worktrees may
# share one cache.
package_dir=$(mktemp -d "${TMPDIR:-/tmp}/voicecalld-plugin.XXXXXX")
trap 'rm -rf "$package_dir"' EXIT
VOICECALLD_PLUGIN_PACKAGE=$(sh "$gateway/scripts/build.sh" "$package_dir/voice-call")
OPENCLAW_BIN=$cache/node_modules/.bin/openclaw
export VOICECALLD_VENV VOICECALLD_PLUGIN_PACKAGE OPENCLAW_BIN

cd "$gateway"
node --test --test-concurrency=2 test/*.test.ts
