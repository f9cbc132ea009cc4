/**
 * The voice-call operations the tool, the gateway methods and the CLI share:
 * upstream's validation messages and result payloads, done by asking the
 * daemon.  Failures throw; daemon refusals read `CODE: message`.
 */
import { randomUUID } from "node:crypto";

import { AmpError } from "./amp.ts";
import type { CallRecord, DaemonClient } from "./client.ts";
import type { ShimConfig } from "./config.ts";

/** Bad input from the caller (upstream's exact messages). */
export class CommandInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CommandInputError";
  }
}

/** A string parameter, trimmed; empty or not a string counts as missing. */
export function str(value: unknown): string | undefined {
  if (typeof value !== "string") {
    return undefined;
  }
  const trimmed = value.trim();
  return trimmed === "" ? undefined : trimmed;
}

/** `notify` or `conversation`, else undefined (the daemon's default applies). */
export function callMode(value: unknown): "notify" | "conversation" | undefined {
  return value === "notify" || value === "conversation" ? value : undefined;
}

/** The text of any failure, as tools and gateway methods return it in `{error}`. */
export function errorText(err: unknown): string {
  if (err instanceof AmpError) {
    if (err.code === "UNHANDLED" || err.code === "UNKNOWN") {
      return "INTERNAL: voicecalld failed on this request (its log says why)";
    }
    return `${err.code}: ${err.description}`;
  }
  return err instanceof Error ? err.message : String(err);
}

function need(value: string | undefined, message: string): string {
  if (!value) {
    throw new CommandInputError(message);
  }
  return value;
}

export type InitiateParams = {
  to?: string;
  message?: string;
  mode?: "notify" | "conversation";
  sessionKey?: string;
  dtmfSequence?: string;
};

/** The operations, over one daemon client. */
export function createCommands(client: DaemonClient, config: ShimConfig) {
  const enabled = () => {
    if (!config.enabled) {
      throw new Error("Voice call disabled in plugin config");
    }
  };

  return {
    async initiate(params: InitiateParams, missingTo = "to required") {
      enabled();
      const to = need(params.to ?? config.toNumber, missingTo);
      const result = await client.initiate({
        to,
        message: params.message,
        mode: params.mode,
        sessionKey: params.sessionKey,
        dtmfSequence: params.dtmfSequence,
      });
      return { callId: result.callId, initiated: true as const };
    },

    async continueCall(callId?: string, message?: string) {
      enabled();
      const id = need(callId, "callId and message required");
      const text = need(message, "callId and message required");
      const result = await client.continueCall(id, text);
      return { success: true as const, transcript: result.transcript };
    },

    async speak(callId?: string, message?: string) {
      enabled();
      const id = need(callId, "callId and message required");
      const text = need(message, "callId and message required");
      await client.speak(id, text);
      return { success: true as const };
    },

    async sendDtmf(callId?: string, digits?: string) {
      enabled();
      const id = need(callId, "callId and digits required");
      const keys = need(digits, "callId and digits required");
      await client.sendDtmf(id, keys);
      return { success: true as const };
    },

    /** A cold transfer to a person at `to` (E.164), after an optional spoken `message`. */
    async transferCall(callId?: string, to?: string, message?: string) {
      enabled();
      const id = need(callId, "callId and to required");
      const target = need(to, "callId and to required");
      await client.transfer(id, target, message);
      return { success: true as const };
    },

    async endCall(callId?: string) {
      enabled();
      const id = need(callId, "callId required");
      await client.end(id);
      return { success: true as const };
    },

    /** One call (`{found, call}`), or without an id every live call (`{found: true, calls}`). */
    async status(
      callId?: string,
    ): Promise<{ found: boolean; call?: CallRecord; calls?: CallRecord[] }> {
      enabled();
      if (!callId) {
        const { calls } = await client.status();
        return { found: true, calls: calls ?? [] };
      }
      try {
        const { call } = await client.status({ callId });
        return call ? { found: true, call } : { found: false };
      } catch (err) {
        if (err instanceof AmpError && err.code === "UNKNOWN_CALL") {
          return { found: false };
        }
        throw err;
      }
    },
  };
}

export type Commands = ReturnType<typeof createCommands>;

type Operation =
  | { status: "pending"; callId: string; pollTimeoutMs: number }
  | { status: "completed"; callId: string; result: { success: true; transcript: string } }
  | { status: "failed"; callId: string; error: string };

const CLEANUP_MS = 5 * 60 * 1000;
const POLL_BUFFER_MS = 30_000;
const DEFAULT_TTS_TIMEOUT_MS = 8_000;

/**
 * `voicecall.continue.start|result`: a continue that runs in the background
 * and is polled for, kept in memory for five minutes after it settles.
 */
export function createContinueOperations(commands: Commands, config: ShimConfig) {
  const operations = new Map<string, Operation>();
  const pollTimeoutMs =
    config.transcriptTimeoutMs + (config.ttsTimeoutMs ?? DEFAULT_TTS_TIMEOUT_MS) + POLL_BUFFER_MS;

  const forgetLater = (operationId: string) => {
    setTimeout(() => operations.delete(operationId), CLEANUP_MS).unref?.();
  };

  return {
    start(callId?: string, message?: string) {
      const id = need(callId, "callId and message required");
      const text = need(message, "callId and message required");
      const operationId = randomUUID();
      operations.set(operationId, { status: "pending", callId: id, pollTimeoutMs });
      commands
        .continueCall(id, text)
        .then(
          (result) => {
            operations.set(operationId, { status: "completed", callId: id, result });
          },
          (err: unknown) => {
            operations.set(operationId, { status: "failed", callId: id, error: errorText(err) });
          },
        )
        .finally(() => forgetLater(operationId));
      return { operationId, status: "pending" as const, pollTimeoutMs };
    },

    result(operationId?: string) {
      const id = need(operationId, "operationId required");
      const operation = operations.get(id);
      if (operation === undefined) {
        throw new CommandInputError("operation not found");
      }
      if (operation.status === "pending") {
        return { operationId: id, status: "pending" as const, pollTimeoutMs: operation.pollTimeoutMs };
      }
      operations.delete(id);
      if (operation.status === "failed") {
        return { operationId: id, status: "failed" as const, error: operation.error };
      }
      return { operationId: id, status: "completed" as const, result: operation.result };
    },
  };
}
