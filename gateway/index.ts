/**
 * The voice-call plugin for OpenClaw, backed by voicecalld: a drop-in for
 * upstream's plugin (same id, config keys, tool, gateway methods and CLI)
 * that does all the telephony in the daemon, over its control socket.
 */
import { readFileSync } from "node:fs";

import { buildJsonPluginConfigSchema, definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";

import { type PluginApi, registerVoiceCall } from "./src/plugin.ts";

/** The manifest beside this file (source) or one folder up (dist/). */
function readManifest(): { configSchema: Record<string, unknown>; uiHints?: Record<string, unknown> } {
  for (const relative of ["./openclaw.plugin.json", "../openclaw.plugin.json"]) {
    try {
      return JSON.parse(readFileSync(new URL(relative, import.meta.url), "utf8"));
    } catch {
      // try the next place
    }
  }
  throw new Error("voice-call: openclaw.plugin.json not found beside the plugin entry");
}

export default definePluginEntry({
  id: "voice-call",
  name: "Voice Call",
  description: "Phone calls for agents through voicecalld (Twilio, Telnyx, Plivo, mock)",
  configSchema: () => {
    const manifest = readManifest();
    return buildJsonPluginConfigSchema(manifest.configSchema, { uiHints: manifest.uiHints as never });
  },
  register(api) {
    registerVoiceCall(api as unknown as PluginApi);
  },
});
