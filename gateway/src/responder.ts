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
 *
 * `Consult` (a realtime model's `openclaw_agent_consult`) runs the same agent
 * in the same session with the question as the prompt, limited by
 * `toolPolicy` as upstream: `safe-read-only` (our default; upstream documents
 * none) allows only the read and search tools, `owner` the agent's normal
 * policy, and `none` refuses the consult.  A run the gateway aborts answers
 * `CANCELLED`.
 */
import { randomUUID } from "node:crypto";

import { AmpError } from "./amp.ts";
import type { CallRecord, ConsultContext, ConsultHandler, ReplyContext, ReplyHandler } from "./client.ts";
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
  /** Only these tools (a consult under `toolPolicy: "safe-read-only"`). */
  toolsAllow?: string[];
  /** A thinking level for this run (`realtime.consultThinkingLevel`). */
  thinkLevel?: string;
  /** Fast mode for this run only (`realtime.consultFastMode`). */
  fastMode?: boolean;
};

/** The tools a consult may use under `toolPolicy: "safe-read-only"`, as upstream lists them. */
export const SAFE_READ_ONLY_TOOLS = ["read", "web_search", "web_fetch", "x_search", "memory_search", "memory_get"];

/** The gateway aborted the agent run before it answered. */
export class RunCancelled extends Error {
  constructor(message = "the agent run was cancelled") {
    super(message);
    this.name = "RunCancelled";
  }
}

/** The shortest wait for a consult: the daemon's default (it runs the whole agent). */
export const MIN_CONSULT_TIMEOUT_MS = 60_000;

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

/** Who answers a call and where: the parts a reply and a consult share. */
function turnBase(
  options: ResponderOptions,
  callId: string,
  call: CallRecord,
  context: ReplyContext,
): Omit<ReplyRequest, "prompt" | "timeoutMs"> & { persona?: string; agentName: string } {
  const { config } = options;
  const agentId = context.agentId || config.agentId || options.defaultAgentId();
  const scope = context.sessionScope ?? config.sessionScope;
  const { provider, model } = splitModel(context.responseModel ?? config.responseModel);
  const agentName = options.agentName?.(agentId) || "assistant";
  const persona = context.responseSystemPrompt ?? config.responseSystemPrompt;
  return {
    callId,
    agentId,
    sessionKey: sessionKeyFor({ ...call, callId }, agentId, scope),
    extraSystemPrompt: systemPrompt(call, persona, agentName),
    provider,
    model,
    persona,
    agentName,
  };
}

/** Build the GenerateReply handler. */
export function createResponder(options: ResponderOptions): ReplyHandler {
  const { config, run, log } = options;
  return async (callId: string, call: CallRecord, context: ReplyContext) => {
    const { persona: _persona, agentName: _name, ...base } = turnBase(options, callId, call, context);
    const timeoutMs = context.responseTimeoutMs ?? config.responseTimeoutMs;
    const prompt = lastCallerWords(call);
    const request: ReplyRequest = {
      ...base,
      prompt: prompt || "(the caller said nothing)",
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

/** What the agent is told when the call's realtime model consults it. */
export function consultSystemPrompt(base: string): string {
  return (
    `${base}\n\nThe realtime voice model speaking on this call is consulting you: it will ` +
    "say your answer to the other party. Answer its question from what you know and your tools."
  );
}

/** Build the Consult handler. */
export function createConsultResponder(options: ResponderOptions): ConsultHandler {
  const { config, run, log } = options;
  return async (callId: string, call: CallRecord, question: string, context: ConsultContext) => {
    const policy = context.toolPolicy ?? "safe-read-only";
    if (policy === "none") {
      throw new AmpError("NOT_ALLOWED", "consults are off (realtime.toolPolicy is none)");
    }
    if (!question.trim()) {
      throw new AmpError("INVALID_ARGUMENT", "question required");
    }
    const { persona: _persona, agentName: _name, ...base } = turnBase(options, callId, call, context);
    const timeoutMs = Math.max(context.responseTimeoutMs ?? config.responseTimeoutMs, MIN_CONSULT_TIMEOUT_MS);
    const request: ReplyRequest = {
      ...base,
      prompt: question,
      extraSystemPrompt: consultSystemPrompt(base.extraSystemPrompt),
      timeoutMs: Math.max(1000, timeoutMs - 250),
      ...(policy === "safe-read-only" ? { toolsAllow: [...SAFE_READ_ONLY_TOOLS] } : {}),
      ...(context.consultThinkingLevel ? { thinkLevel: context.consultThinkingLevel } : {}),
      ...(typeof context.consultFastMode === "boolean" ? { fastMode: context.consultFastMode } : {}),
    };
    let payloads: RunPayload[];
    try {
      payloads = await run(request);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      if (err instanceof RunCancelled) {
        log?.info(`[voice-call] consult on call ${callId} cancelled: ${why}`);
        throw new AmpError("CANCELLED", why);
      }
      log?.warn(`[voice-call] no consult answer for call ${callId}: ${why}`);
      throw new AmpError("INTERNAL", `the gateway's agent failed: ${why}`);
    }
    log?.info(`[voice-call] consult on call ${callId} answered by agent ${request.agentId}`);
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
      request.thinkLevel ??
      (request.provider && request.model
        ? agent.resolveThinkingDefault?.({ cfg, provider: request.provider, model: request.model })
        : undefined);
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
      ...(request.toolsAllow ? { toolsAllow: request.toolsAllow } : {}),
      ...(request.fastMode !== undefined ? { fastMode: request.fastMode } : {}),
      timeoutMs: request.timeoutMs,
      lane: "voice",
      messageProvider: "voice",
      verboseLevel: "off",
      disableMessageTool: true,
      terminalReplyExpectation: "required",
    });
    const payloads = result.payloads ?? [];
    if (payloads.length === 0 && result.meta?.aborted) {
      throw new RunCancelled("the agent run was aborted");
    }
    return payloads;
  };
}
