// The entry OpenClaw runs for this folder (package.json openclaw.runtimeExtensions).
//
// A copying install (`openclaw plugins install ./gateway`) refuses a
// TypeScript entry unless JavaScript is declared beside it, and never runs
// npm scripts, so nothing could be built at install time. This file is that
// JavaScript: hand-written, not build output. Node 24, which OpenClaw
// requires, strips the types of the .ts modules it imports (the sources use
// erasable syntax only). The published package (scripts/build.sh) replaces
// it with compiled dist/index.js, since Node strips no types under node_modules.
export { default } from "./index.ts";
