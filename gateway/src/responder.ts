/**
 * The responder: when voicecalld asks `GenerateReply` for a conversation turn,
 * run the gateway's agent for that call and answer with the words to say.
 *
 * Session key per call as `sessionScope` says (upstream 2026.9): per-phone and
 * per-call keys live under `agent:<agentId>:voice:`, `main` is the agent's main
 * session; a record's own `agent:<agentId>:...` session key is kept.  The
 * prompt is the caller's last words; the system prompt carries the persona
 * (`responseSystemPrompt` or a built-in one), the call's purpose, the
 * conversation so far, and the spoken-output contract.  If the agent fails
 * the shim answers with an error, so the daemon says its apology and the call
 * goes on.
 */
import { randomUUID } from "node:crypto";

import { AmpError } from "./amp.ts";
import type { CallRecord, ReplyContext, ReplyHandler } from "./client.ts";
import type { ShimConfig } from "./config.ts";
import { type RunPayload, SPOKEN_OUTPUT_CONTRACT, spokenText } from "./reply-text.ts";

/** One agent run, as the responder asks for it. */
export type ReplyRequest = {
  callId: string;
  agentId: string;
  sessionKey: string;
  prompt: string;
  extraSystemPrompt: string;
  provider?: string;
  model?: string;
  timeoutMs: number;
};

/** Runs the agent; resolves with its output payloads. */
export type AgentRun = (request: ReplyRequest) => Promise<RunPayload[]>;

type Log = { info: (msg: string) => void; warn: (msg: string) => void };

/** The other party's number: the caller on inbound calls, the callee on outbound ones. */
export function peerNumber(call: CallRecord): string {
  return (call.direction === "outbound" ? call.to : call.from) ?? "";
}

/** The agent session a call's replies belong to. */
export function sessionKeyFor(
  call: CallRecord,
  agentId: string,
  scope: ShimConfig["sessionScope"],
): string {
  const own = typeof call.sessionKey === "string" ? call.sessionKey.trim() : "";
  if (own) {
    return own.startsWith(`agent:${agentId}:`) ? own : `agent:${agentId}:voice:session:${own}`;
  }
  if (scope === "main") {
    return `agent:${agentId}:main`;
  }
  if (scope === "per-call") {
    return `agent:${agentId}:voice:call:${call.callId}`;
  }
  const digits = peerNumber(call).replace(/\D/g, "");
  return `agent:${agentId}:voice:${digits || "unknown"}`;
}

/** Split `provider/model` (a bare model leaves the provider to the gateway). */
export function splitModel(ref: string | undefined): { provider?: string; model?: string } {
  if (!ref) {
    return {};
  }
  const slash = ref.indexOf("/");
  return slash === -1 ? { model: ref } : { provider: ref.slice(0, slash), model: ref.slice(slash + 1) };
}

/** The system prompt for one turn. */
export function systemPrompt(
  call: CallRecord,
  persona: string | undefined,
  agentName: string,
): string {
  const peer = peerNumber(call);
  const base =
    persona ??
    `You are ${agentName}, a helpful voice assistant on a phone call. Keep responses brief and ` +
      "conversational (one or two sentences). Be natural and friendly. " +
      `The other party's phone number is ${peer || "unknown"}. You may use your tools when they help.`;
  const parts = [base];
  const transcript = call.transcript ?? [];
  const purpose = transcript.find((entry) => entry.speaker === "bot" && entry.kind !== "dtmf");
  const initial = (call.metadata?.initialMessage as string | undefined) ?? purpose?.text;
  if (call.direction === "outbound" && initial) {
    parts.push(`You placed this call; its purpose, as you opened it: ${initial}`);
  }
  if (transcript.length > 0) {
    const lines = transcript.map((entry) => {
      const who = entry.speaker === "bot" ? "You" : "Caller";
      return entry.kind === "dtmf" ? `${who} (keypad): ${entry.text}` : `${who}: ${entry.text}`;
    });
    parts.push(`Conversation so far:\n${lines.join("\n")}`);
  }
  parts.push(SPOKEN_OUTPUT_CONTRACT);
  return parts.join("\n\n");
}

/** The caller's last words (what the agent answers). */
export function lastCallerWords(call: CallRecord): string {
  const transcript = call.transcript ?? [];
  for (let i = transcript.length - 1; i >= 0; i -= 1) {
    if (transcript[i].speaker === "user") {
      return transcript[i].text;
    }
  }
  return "";
}

export type ResponderOptions = {
  config: ShimConfig;
  run: AgentRun;
  /** The agent that answers when neither the daemon nor the config names one. */
  defaultAgentId: () => string;
  agentName?: (agentId: string) => string | undefined;
  log?: Log;
};

/** Build the GenerateReply handler. */
export function createResponder(options: ResponderOptions): ReplyHandler {
  const { config, run, log } = options;
  return async (callId: string, call: CallRecord, context: ReplyContext) => {
    const agentId = context.agentId || config.agentId || options.defaultAgentId();
    const scope = context.sessionScope ?? config.sessionScope;
    const timeoutMs = context.responseTimeoutMs ?? config.responseTimeoutMs;
    const { provider, model } = splitModel(context.responseModel ?? config.responseModel);
    const prompt = lastCallerWords(call);
    const agentName = options.agentName?.(agentId) || "assistant";
    const request: ReplyRequest = {
      callId,
      agentId,
      sessionKey: sessionKeyFor({ ...call, callId }, agentId, scope),
      prompt: prompt || "(the caller said nothing)",
      extraSystemPrompt: systemPrompt(
        call,
        context.responseSystemPrompt ?? config.responseSystemPrompt,
        agentName,
      ),
      provider,
      model,
      // Answer a little before the daemon stops waiting, so a late reply is not lost.
      timeoutMs: Math.max(1000, timeoutMs - 250),
    };
    let payloads: RunPayload[];
    try {
      payloads = await run(request);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      log?.warn(`[voice-call] no reply for call ${callId}: ${why}`);
      throw new AmpError("INTERNAL", `the gateway's agent failed: ${why}`);
    }
    return spokenText(payloads);
  };
}

/** The parts of OpenClaw's plugin runtime the embedded agent run needs. */
export type AgentRuntime = {
  config: { current: () => unknown };
  agent: {
    resolveAgentDir: (cfg: any, agentId: string) => string;
    resolveAgentWorkspaceDir: (cfg: any, agentId: string) => string;
    resolveThinkingDefault?: (params: { cfg: any; provider: string; model: string }) => unknown;
    ensureAgentWorkspace?: (params?: { dir?: string }) => Promise<unknown>;
    runEmbeddedAgent: (params: any) => Promise<{ payloads?: RunPayload[]; meta?: { aborted?: boolean } }>;
    session?: {
      getSessionEntry?: (params: { agentId?: string; sessionKey: string }) => { sessionId?: string } | undefined;
      upsertSessionEntry?: (params: {
        agentId?: string;
        sessionKey: string;
        entry: Record<string, unknown>;
      }) => unknown;
    };
  };
};

/** Run OpenClaw's embedded agent (lane `voice`) for one reply. */
export function embeddedAgentRun(runtime: AgentRuntime): AgentRun {
  return async (request) => {
    const cfg = runtime.config.current();
    const agent = runtime.agent;
    const workspaceDir = agent.resolveAgentWorkspaceDir(cfg, request.agentId);
    const agentDir = agent.resolveAgentDir(cfg, request.agentId);
    await agent.ensureAgentWorkspace?.({ dir: workspaceDir });
    let sessionId = agent.session?.getSessionEntry?.({
      agentId: request.agentId,
      sessionKey: request.sessionKey,
    })?.sessionId;
    if (!sessionId) {
      sessionId = randomUUID();
      await agent.session?.upsertSessionEntry?.({
        agentId: request.agentId,
        sessionKey: request.sessionKey,
        entry: { sessionId, updatedAt: Date.now() },
      });
    }
    const thinkLevel =
      request.provider && request.model
        ? agent.resolveThinkingDefault?.({ cfg, provider: request.provider, model: request.model })
        : undefined;
    const result = await agent.runEmbeddedAgent({
      sessionId,
      sessionKey: request.sessionKey,
      agentId: request.agentId,
      runId: `voice:${request.callId}:${Date.now()}`,
      workspaceDir,
      agentDir,
      config: cfg,
      prompt: request.prompt,
      extraSystemPrompt: request.extraSystemPrompt,
      ...(request.provider ? { provider: request.provider } : {}),
      ...(request.model ? { model: request.model } : {}),
      ...(thinkLevel ? { thinkLevel } : {}),
      timeoutMs: request.timeoutMs,
      lane: "voice",
      messageProvider: "voice",
      verboseLevel: "off",
      disableMessageTool: true,
      terminalReplyExpectation: "required",
    });
    const payloads = result.payloads ?? [];
    if (payloads.length === 0 && result.meta?.aborted) {
      throw new Error("the agent run was aborted");
    }
    return payloads;
  };
}
