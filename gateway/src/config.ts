/**
 * The few plugin config keys the shim itself reads.  The daemon reads and
 * validates the whole config from the same file; the gateway has already
 * checked it against the manifest's schema.
 */

export type ShimConfig = {
  enabled: boolean;
  controlSocket?: string;
  toNumber?: string;
  transcriptTimeoutMs: number;
  ttsTimeoutMs?: number;
  agentId?: string;
  sessionScope: "per-phone" | "per-call" | "main";
  responseModel?: string;
  responseSystemPrompt?: string;
  responseTimeoutMs: number;
};

function record(value: unknown): Record<string, unknown> {
  return value && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value.trim() !== "" ? value.trim() : undefined;
}

function count(value: unknown, fallback: number): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : fallback;
}

/** Read the shim's keys from `plugins.entries.voice-call.config` (defaults as upstream). */
export function readShimConfig(raw: unknown): ShimConfig {
  const config = record(raw);
  const scope = config.sessionScope;
  const tts = record(config.tts);
  return {
    enabled: typeof config.enabled === "boolean" ? config.enabled : true,
    controlSocket: text(config.controlSocket),
    toNumber: text(config.toNumber),
    transcriptTimeoutMs: count(config.transcriptTimeoutMs, 180_000),
    ttsTimeoutMs: typeof tts.timeoutMs === "number" ? tts.timeoutMs : undefined,
    agentId: text(config.agentId),
    sessionScope: scope === "per-call" || scope === "main" ? scope : "per-phone",
    responseModel: text(config.responseModel),
    responseSystemPrompt: text(config.responseSystemPrompt),
    responseTimeoutMs: count(config.responseTimeoutMs, 30_000),
  };
}
