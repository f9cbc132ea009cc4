/**
 * The daemon's control socket: where it is, connecting (and reconnecting with
 * backoff after the daemon restarts), and the control commands as typed calls.
 */
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { AmpConnection, AmpError, type Box, type BoxInput, codec, decodeJson } from "./amp.ts";

/** A call record as the daemon sends it (see docs/control-protocol.md). */
/** A call's states as the daemon names them; the terminal ones double as end reasons. */
export type CallState =
  | "initiated"
  | "ringing"
  | "answered"
  | "active"
  | "speaking"
  | "listening"
  | TerminalState;

/**
 * Where a call ends: upstream's nine, and ours, `transferred` (handed to a person) and
 * `shutdown` (still live when a draining daemon's time ran out).
 */
export type TerminalState =
  | "completed"
  | "hangup-user"
  | "hangup-bot"
  | "timeout"
  | "error"
  | "failed"
  | "no-answer"
  | "busy"
  | "voicemail"
  | "transferred"
  | "shutdown";

export type CallRecord = {
  callId: string;
  provider?: string;
  providerCallId?: string;
  direction?: "inbound" | "outbound";
  mode?: "notify" | "conversation";
  from?: string;
  to?: string;
  state?: CallState;
  startedAt?: number;
  answeredAt?: number;
  endedAt?: number;
  endReason?: string;
  sessionKey?: string;
  /** Free map; `transferredTo` holds the number a transferred call was handed to. */
  metadata?: Record<string, unknown>;
  transcript?: Array<{ speaker: "bot" | "user"; text: string; kind?: string; timestamp?: number }>;
  [key: string]: unknown;
};

/** What the daemon passes with GenerateReply (per-number route applied). */
export type ReplyContext = {
  agentId?: string;
  sessionScope?: "per-phone" | "per-call" | "main";
  responseModel?: string;
  responseSystemPrompt?: string;
  responseTimeoutMs?: number;
  /** The dialled number whose `numbers.<E.164>` route the call took, if any. */
  number?: string;
};

/** What the daemon passes with Consult: the reply context plus `realtime.*` consult policy. */
export type ConsultContext = ReplyContext & {
  toolPolicy?: "safe-read-only" | "owner" | "none";
  consultPolicy?: "auto" | "substantive" | "always";
  consultThinkingLevel?: string;
  consultFastMode?: boolean;
};

/** Answers a consult question asked during a call: the answer, or nothing. */
export type ConsultHandler = (
  callId: string,
  call: CallRecord,
  question: string,
  context: ConsultContext,
) => Promise<string | null | undefined>;

/** Writes a reply for a conversation turn: the text to say, or nothing. */
export type ReplyHandler = (
  callId: string,
  call: CallRecord,
  context: ReplyContext,
) => Promise<string | null | undefined>;

/**
 * Where the daemon listens: an explicit path, else `$VOICECALLD_SOCKET`, else
 * the config's `controlSocket`, else `<state-dir>/control.sock` with the
 * daemon's own state-dir default.
 */
export function resolveSocketPath(
  options: { explicit?: string; configured?: string } = {},
  env: NodeJS.ProcessEnv = process.env,
): string {
  const expand = (p: string) =>
    path.resolve(p === "~" || p.startsWith("~/") ? path.join(home(env), p.slice(1)) : p);
  const chosen = options.explicit || env.VOICECALLD_SOCKET || options.configured;
  if (chosen) {
    return expand(chosen);
  }
  let state: string;
  if (env.VOICECALLD_STATE_DIR) {
    state = expand(env.VOICECALLD_STATE_DIR);
  } else {
    const base = env.XDG_STATE_HOME || path.join(home(env), ".local", "state");
    state = path.join(base, "voicecalld");
  }
  return path.join(state, "control.sock");
}

function home(env: NodeJS.ProcessEnv): string {
  return env.HOME || os.homedir();
}

/** The daemon's socket cannot be reached: one sentence saying where and how to start it. */
export class Unreachable extends Error {
  readonly socketPath: string;
  readonly reason: string;

  constructor(socketPath: string, reason: string) {
    super(
      `voicecalld is not reachable at ${socketPath} (${reason}); start it with ` +
        "`systemctl start voicecalld` or `make run`",
    );
    this.name = "Unreachable";
    this.socketPath = socketPath;
    this.reason = reason;
  }
}

const REASONS: Record<string, string> = {
  ENOENT: "no socket there",
  ECONNREFUSED: "nothing is listening",
  EACCES: "permission denied",
  ENOTSOCK: "not a socket",
};

/** Open one AMP connection to the socket at `socketPath`, or fail with Unreachable. */
export function connectSocket(socketPath: string, timeoutMs = 5000): Promise<AmpConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path: socketPath });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Unreachable(socketPath, `no connection within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Unreachable(socketPath, REASONS[err.code ?? ""] ?? err.message));
    });
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(new AmpConnection(socket));
    });
  });
}

/** How long each command may take before the shim gives up (milliseconds). */
export type Timeouts = {
  quick: number;
  initiate: number;
  speak: number;
  continue: number;
};

export const DEFAULT_TIMEOUTS: Timeouts = {
  quick: 15_000,
  initiate: 30_000,
  speak: 600_000,
  continue: 180_000 + 600_000,
};

export type ClientOptions = {
  socketPath: string;
  /** Keep a connection up, reconnecting with backoff when it drops. */
  persistent?: boolean;
  /** Register as the conversation responder on every (re)connection. */
  responder?: { name: string; handler: ReplyHandler; consult?: ConsultHandler };
  /** Events from Subscribe, after every (re)connection. */
  subscription?: { callId?: string; onEvent: (event: Record<string, unknown>) => void };
  timeouts?: Partial<Timeouts>;
  /** Backoff bounds for reconnects (milliseconds). */
  backoff?: { initial: number; max: number };
  log?: { info: (msg: string) => void; warn: (msg: string) => void };
  connect?: (socketPath: string) => Promise<AmpConnection>;
};

/**
 * A client of voicecalld's control socket.  Commands connect on demand (one
 * shared connection); a persistent client also reconnects by itself with
 * exponential backoff and re-registers its responder and subscription.
 */
export class DaemonClient {
  readonly socketPath: string;
  private readonly options: ClientOptions;
  private readonly timeouts: Timeouts;
  private connection: AmpConnection | null = null;
  private connecting: Promise<AmpConnection> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private delay: number;
  private stopped = false;
  private readonly connectedListeners: Array<() => void> = [];

  constructor(options: ClientOptions) {
    this.options = options;
    this.socketPath = options.socketPath;
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.delay = options.backoff?.initial ?? 100;
  }

  /** Whether a connection is up now. */
  get connected(): boolean {
    return this.connection?.open ?? false;
  }

  /** Start keeping a connection up (persistent clients). */
  start(): void {
    this.stopped = false;
    void this.ensure().catch(() => {
      /* reconnect scheduled by ensure */
    });
  }

  /** Close the connection and stop reconnecting. */
  stop(): void {
    this.stopped = true;
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    this.connection?.close();
    this.connection = null;
  }

  /** Resolves the next time a connection has been set up (responder registered, subscribed). */
  whenConnected(): Promise<void> {
    if (this.connected && this.connecting === null) {
      return Promise.resolve();
    }
    return new Promise((resolve) => this.connectedListeners.push(resolve));
  }

  /** The open connection, connecting now if there is none. */
  ensure(): Promise<AmpConnection> {
    if (this.connection?.open) {
      return Promise.resolve(this.connection);
    }
    if (this.connecting === null) {
      this.connecting = this.setUp().finally(() => {
        this.connecting = null;
      });
    }
    return this.connecting;
  }

  private async setUp(): Promise<AmpConnection> {
    const connect = this.options.connect ?? ((p: string) => connectSocket(p));
    let conn: AmpConnection;
    try {
      conn = await connect(this.socketPath);
    } catch (err) {
      this.scheduleRetry();
      throw err;
    }
    const { responder, subscription } = this.options;
    if (responder !== undefined) {
      conn.respond("GenerateReply", (box) => this.generateReply(box));
      if (responder.consult !== undefined) {
        conn.respond("Consult", (box) => this.consult(box));
      }
    }
    if (subscription !== undefined) {
      conn.respond("Event", (box) => {
        const event = decodeJson(box, "event");
        if (event && typeof event === "object") {
          subscription.onEvent(event as Record<string, unknown>);
        }
      });
    }
    try {
      if (responder !== undefined) {
        await conn.call("RegisterResponder", { name: responder.name }, {
          timeoutMs: this.timeouts.quick,
        });
      }
      if (subscription !== undefined) {
        await conn.call("Subscribe", optional({ callId: subscription.callId }), {
          timeoutMs: this.timeouts.quick,
        });
      }
    } catch (err) {
      conn.close();
      this.scheduleRetry();
      throw err instanceof AmpError ? err : new Unreachable(this.socketPath, closedReason(err));
    }
    this.connection = conn;
    this.delay = this.options.backoff?.initial ?? 100;
    if (responder !== undefined || subscription !== undefined) {
      this.options.log?.info(`[voice-call] connected to voicecalld at ${this.socketPath}`);
    }
    conn.onClose(() => {
      if (this.connection === conn) {
        this.connection = null;
        if (this.options.persistent && !this.stopped) {
          this.options.log?.warn(
            `[voice-call] lost voicecalld at ${this.socketPath}; reconnecting`,
          );
        }
        this.scheduleRetry();
      }
    });
    for (const listener of this.connectedListeners.splice(0)) {
      listener();
    }
    return conn;
  }

  private scheduleRetry(): void {
    if (!this.options.persistent || this.stopped || this.retryTimer !== null) {
      return;
    }
    const max = this.options.backoff?.max ?? 5000;
    const wait = this.delay;
    this.delay = Math.min(max, this.delay * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.ensure().catch(() => {
        /* the next retry is already scheduled */
      });
    }, wait);
    this.retryTimer.unref?.();
  }

  private async generateReply(box: Box): Promise<BoxInput> {
    const handler = this.options.responder!.handler;
    const callId = codec.readText(box.get("callId") ?? Buffer.alloc(0));
    const call = (decodeJson(box, "call") ?? { callId }) as CallRecord;
    const context = (decodeJson(box, "context") ?? {}) as ReplyContext;
    const text = await handler(callId, call, context);
    return text ? { text } : {};
  }

  private async consult(box: Box): Promise<BoxInput> {
    const handler = this.options.responder!.consult!;
    const callId = codec.readText(box.get("callId") ?? Buffer.alloc(0));
    const question = codec.readText(box.get("question") ?? Buffer.alloc(0));
    const call = (decodeJson(box, "call") ?? { callId }) as CallRecord;
    const context = (decodeJson(box, "context") ?? {}) as ConsultContext;
    const text = await handler(callId, call, question, context);
    return text ? { text } : {};
  }

  private async call(name: string, args: BoxInput, timeoutMs: number): Promise<Box> {
    const conn = await this.ensure();
    try {
      return await conn.call(name, args, { timeoutMs });
    } catch (err) {
      if (err instanceof AmpError) {
        throw err;
      }
      throw new Unreachable(this.socketPath, closedReason(err));
    }
  }

  // -- the control commands ------------------------------------------------

  async ping(): Promise<{ version: string; provider: string }> {
    const box = await this.call("Ping", [], this.timeouts.quick);
    return { version: text(box, "version"), provider: text(box, "provider") };
  }

  async initiate(args: {
    to?: string;
    message?: string;
    mode?: string;
    sessionKey?: string;
    dtmfSequence?: string;
  }): Promise<{ callId: string; call: CallRecord }> {
    const box = await this.call("Initiate", optional(args), this.timeouts.initiate);
    return { callId: text(box, "callId"), call: decodeJson(box, "call") as CallRecord };
  }

  async continueCall(callId: string, message: string): Promise<{ callId: string; transcript: string }> {
    const box = await this.call("Continue", { callId, message }, this.timeouts.continue);
    return { callId: text(box, "callId"), transcript: text(box, "transcript") };
  }

  async speak(callId: string, message: string): Promise<{ played: string; complete: boolean }> {
    const box = await this.call("Speak", { callId, message }, this.timeouts.speak);
    return {
      played: text(box, "played"),
      complete: codec.readBoolean(box.get("complete") ?? Buffer.from("True")),
    };
  }

  async expose(mode: string): Promise<{ how: string; publicUrl?: string; streamUrl?: string }> {
    const box = await this.call("Expose", { mode }, this.timeouts.initiate * 3);
    return {
      how: text(box, "how"),
      publicUrl: box.has("publicUrl") ? text(box, "publicUrl") : undefined,
      streamUrl: box.has("streamUrl") ? text(box, "streamUrl") : undefined,
    };
  }

  /** Hand the call to a person at `to` (E.164), after `message` if given; the record once the carrier took it. */
  async transfer(callId: string, to: string, message?: string): Promise<CallRecord> {
    const box = await this.call("Transfer", optional({ callId, to, message }), this.timeouts.speak);
    return decodeJson(box, "call") as CallRecord;
  }

  async sendDtmf(callId: string, digits: string): Promise<void> {
    await this.call("SendDtmf", { callId, digits }, this.timeouts.quick);
  }

  async end(callId: string): Promise<CallRecord> {
    const box = await this.call("End", { callId }, this.timeouts.quick);
    return decodeJson(box, "call") as CallRecord;
  }

  async status(args: { callId?: string; recent?: number } = {}): Promise<{
    call?: CallRecord;
    calls?: CallRecord[];
  }> {
    const values: Array<[string, Buffer]> = [];
    if (args.callId) {
      values.push(["callId", codec.text(args.callId)]);
    }
    if (args.recent !== undefined) {
      values.push(["recent", codec.integer(args.recent)]);
    }
    const box = await this.call("Status", values, this.timeouts.quick);
    const call = decodeJson(box, "call") as CallRecord | undefined;
    const calls = decodeJson(box, "calls") as CallRecord[] | undefined;
    return call !== undefined && call !== null ? { call } : { calls: calls ?? [] };
  }

  async simulate(args: {
    action: string;
    callId?: string;
    from?: string;
    to?: string;
    text?: string;
    digits?: string;
  }): Promise<{ callId?: string; text?: string }> {
    // A consult runs the call's agent, which takes longer than the caller's other acts.
    const timeoutMs = args.action === "consult" ? this.timeouts.speak : this.timeouts.quick;
    const box = await this.call("Simulate", optional(args), timeoutMs);
    return {
      ...(box.has("callId") ? { callId: text(box, "callId") } : {}),
      ...(box.has("text") ? { text: text(box, "text") } : {}),
    };
  }
}

function text(box: Box, key: string): string {
  const value = box.get(key);
  return value === undefined ? "" : codec.readText(value);
}

function optional(args: Record<string, string | undefined>): Array<[string, Buffer]> {
  return Object.entries(args)
    .filter((entry): entry is [string, string] => typeof entry[1] === "string" && entry[1] !== "")
    .map(([key, value]) => [key, codec.text(value)]);
}

function closedReason(err: unknown): string {
  const detail = err instanceof Error ? err.message : String(err);
  return `${detail}; only the daemon's user or the socket's group may connect`;
}
