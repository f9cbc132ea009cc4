/**
 * Registers the voice-call plugin's surfaces with OpenClaw: the `voice_call`
 * tool, the `voicecall.*` gateway methods, the `openclaw voicecall` CLI, and
 * (in the gateway) the responder service that answers voicecalld's
 * conversation turns with the gateway's agent.
 */
import { DaemonClient, resolveSocketPath } from "./client.ts";
import { type CliIo, type CommandLike, registerVoiceCallCli } from "./cli.ts";
import { createCommands } from "./commands.ts";
import { type DoctorRunner, spawnDoctor, voicecallBinary } from "./doctor.ts";
import { readShimConfig } from "./config.ts";
import { type MethodRegistrar, registerVoiceCallMethods } from "./methods.ts";
import {
  type AgentRun,
  type AgentRuntime,
  createConsultResponder,
  createResponder,
  embeddedAgentRun,
} from "./responder.ts";
import { VOICE_CALL_PARAMETERS, runVoiceCallTool } from "./tool.ts";

type Logger = { info: (msg: string) => void; warn: (msg: string) => void; error?: (msg: string) => void };

/** The parts of OpenClaw's plugin api this plugin uses. */
export type PluginApi = {
  pluginConfig?: unknown;
  config?: unknown;
  registrationMode?: string;
  logger?: Logger;
  runtime?: AgentRuntime;
  registerTool: (tool: {
    name: string;
    label?: string;
    description: string;
    parameters: unknown;
    execute: (toolCallId: string, params: unknown) => Promise<unknown>;
  }) => void;
  registerGatewayMethod: MethodRegistrar;
  registerCli: (
    registrar: (ctx: { program: CommandLike }) => void | Promise<void>,
    options?: { commands?: string[]; descriptors?: unknown[] },
  ) => void;
  registerService?: (service: {
    id: string;
    start: (ctx?: unknown) => void | Promise<void>;
    stop?: (ctx?: unknown) => void | Promise<void>;
  }) => void;
};

export type RegisterOptions = {
  env?: NodeJS.ProcessEnv;
  /** Replace the embedded agent (tests without a model). */
  agentRun?: AgentRun;
  /** Where the CLI writes (tests). */
  cliIo?: CliIo;
  /** Runs `voicecall doctor` (default: spawn `$VOICECALL_BIN` or `voicecall`). */
  doctor?: DoctorRunner;
};

export const CLI_DESCRIPTOR = {
  name: "voicecall",
  description: "Place and manage phone calls through voicecalld",
  hasSubcommands: true,
};

type AgentEntry = { id?: string; default?: boolean; name?: string; identity?: { name?: string } };

/** The configured agents: 2026.9's `agents.entries` (keyed by id), else the legacy `agents.list`. */
function agentsOf(config: unknown): AgentEntry[] {
  const agents = (config as { agents?: { entries?: unknown; list?: unknown } } | undefined)?.agents;
  const entries = agents?.entries;
  if (entries && typeof entries === "object" && !Array.isArray(entries)) {
    return Object.entries(entries as Record<string, AgentEntry>).map(([id, entry]) => ({ ...entry, id }));
  }
  return Array.isArray(agents?.list) ? (agents.list as AgentEntry[]) : [];
}

/** The agent that answers when neither the daemon nor the plugin config names one. */
export function defaultAgentId(config: unknown): string {
  const agents = agentsOf(config);
  const chosen = agents.length === 1 ? agents[0] : agents.find((a) => a.default);
  return typeof chosen?.id === "string" && chosen.id ? chosen.id : "main";
}

function isCliOnlyProcess(env: NodeJS.ProcessEnv): boolean {
  return env.OPENCLAW_CLI === "1" && !process.argv.slice(2).includes("gateway");
}

/** Register everything; returns the pieces for tests. */
export function registerVoiceCall(api: PluginApi, options: RegisterOptions = {}) {
  const env = options.env ?? process.env;
  const config = readShimConfig(api.pluginConfig);
  const socketPath = resolveSocketPath({ configured: config.controlSocket }, env);
  const client = new DaemonClient({
    socketPath,
    timeouts: { continue: config.transcriptTimeoutMs + 600_000 },
  });
  const commands = createCommands(client, config);
  const log: Logger = api.logger ?? { info: () => {}, warn: () => {} };

  api.registerCli(
    ({ program }) =>
      registerVoiceCallCli(program, {
        commands,
        client,
        io: options.cliIo,
        doctor: options.doctor ?? spawnDoctor(voicecallBinary(env), env),
        toNumber: config.toNumber,
      }),
    { commands: ["voicecall"], descriptors: [CLI_DESCRIPTOR] },
  );
  if (api.registrationMode === "cli-metadata") {
    return { client, commands, config, responder: null };
  }

  api.registerTool({
    name: "voice_call",
    label: "Voice Call",
    description: "Make phone calls and have voice conversations via the voice-call plugin.",
    parameters: VOICE_CALL_PARAMETERS,
    execute: (_toolCallId, params) => runVoiceCallTool(commands, params),
  });
  registerVoiceCallMethods(api.registerGatewayMethod, commands, config);

  const run = options.agentRun ?? (api.runtime ? embeddedAgentRun(api.runtime) : undefined);
  const responderOptions = {
    config,
    run:
      run ??
      (async () => {
        throw new Error("the gateway's agent runtime is not available");
      }),
    defaultAgentId: () => defaultAgentId(currentConfig(api)),
    agentName: (id: string) => {
      const agent = agentsOf(currentConfig(api)).find((a) => a.id === id);
      return agent?.identity?.name ?? agent?.name;
    },
    log,
  };
  const responder = new DaemonClient({
    socketPath,
    persistent: true,
    log,
    responder: {
      name: "openclaw-gateway",
      handler: createResponder(responderOptions),
      consult: createConsultResponder(responderOptions),
    },
  });
  if (api.registrationMode === undefined || api.registrationMode === "full") {
    api.registerService?.({
      id: "voicecall",
      start: () => {
        if (!config.enabled || isCliOnlyProcess(env)) {
          return;
        }
        log.info(`[voice-call] answering conversation turns for voicecalld at ${socketPath}`);
        responder.start();
      },
      stop: () => {
        responder.stop();
        client.stop();
      },
    });
  }
  return { client, commands, config, responder };
}

function currentConfig(api: PluginApi): unknown {
  try {
    return api.runtime?.config.current() ?? api.config;
  } catch {
    return api.config;
  }
}
