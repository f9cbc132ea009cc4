/**
 * `openclaw voicecall ...`: upstream's commands, each one request to the
 * daemon.  Results are pretty JSON on stdout (`tail`: one JSON object per
 * line).  A failure is one line on stderr and a non-zero exit: 1 when the
 * daemon refused, 2 for bad input, 3 when the daemon cannot be reached.
 */
import { type CallRecord, DaemonClient, Unreachable } from "./client.ts";
import { type Commands, CommandInputError, errorText } from "./commands.ts";
import type { DoctorRunner } from "./doctor.ts";

/** The part of Commander's `Command` the CLI uses. */
export type CommandLike = {
  command(name: string): CommandLike;
  description(text: string): CommandLike;
  option(flags: string, description?: string, defaultValue?: string): CommandLike;
  requiredOption(flags: string, description?: string, defaultValue?: string): CommandLike;
  action(fn: (options: Record<string, string | undefined>) => unknown): CommandLike;
};

export type CliIo = {
  out: (line: string) => void;
  err: (line: string) => void;
  setExitCode: (code: number) => void;
  /** Resolves when the user interrupts (`tail` stops then). */
  interrupted: () => Promise<void>;
};

export const processIo: CliIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  setExitCode: (code) => {
    process.exitCode = code;
  },
  interrupted: () =>
    new Promise((resolve) => {
      process.once("SIGINT", () => resolve());
      process.once("SIGTERM", () => resolve());
    }),
};

export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;
export const EXIT_UNREACHABLE = 3;

function exitCodeFor(err: unknown): number {
  if (err instanceof Unreachable) {
    return EXIT_UNREACHABLE;
  }
  if (err instanceof CommandInputError) {
    return EXIT_USAGE;
  }
  return EXIT_REFUSED;
}

type Stats = { count: number; minMs?: number; maxMs?: number; avgMs?: number; p50Ms?: number; p95Ms?: number };

function stats(values: number[]): Stats {
  if (values.length === 0) {
    return { count: 0 };
  }
  const sorted = [...values].sort((a, b) => a - b);
  const pick = (p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    count: sorted.length,
    minMs: sorted[0],
    maxMs: sorted[sorted.length - 1],
    avgMs: Math.round(sum / sorted.length),
    p50Ms: pick(50),
    p95Ms: pick(95),
  };
}

/** `latency`: turn latencies of the most recent calls, as upstream reports them. */
export function latencyReport(records: CallRecord[]) {
  const numbers = (key: string) =>
    records
      .map((r) => r.metadata?.[key])
      .filter((v): v is number => typeof v === "number" && Number.isFinite(v));
  // Ours: the stages of each call's last answered turn (metadata.lastTurnLatency).
  const stages: Record<string, number[]> = {};
  for (const record of records) {
    const measured = record.metadata?.lastTurnLatency;
    if (measured && typeof measured === "object") {
      for (const [name, value] of Object.entries(measured)) {
        if (typeof value === "number" && Number.isFinite(value)) {
          (stages[name] ??= []).push(value);
        }
      }
    }
  }
  return {
    recordsScanned: records.length,
    turnLatency: stats(numbers("lastTurnLatencyMs")),
    listenWait: stats(numbers("lastTurnListenWaitMs")),
    stages: Object.fromEntries(
      Object.keys(stages)
        .sort()
        .map((name) => [name, stats(stages[name])]),
    ),
  };
}

export type CliDeps = {
  commands: Commands;
  client: DaemonClient;
  io?: CliIo;
  /** Runs `voicecall doctor` with these arguments (`setup`, `smoke`). */
  doctor?: DoctorRunner;
  /** The configured `toNumber`, the smoke call's default. */
  toNumber?: string;
};

/** Add `voicecall` and its subcommands to `program`. */
export function registerVoiceCallCli(program: CommandLike, deps: CliDeps): void {
  const io = deps.io ?? processIo;
  const { commands, client } = deps;
  const run = (work: (o: Record<string, string | undefined>) => Promise<unknown>) =>
    async (options: Record<string, string | undefined>) => {
      try {
        const result = await work(options);
        if (result !== undefined) {
          io.out(JSON.stringify(result, null, 2));
        }
      } catch (err) {
        io.err(`voicecall: ${errorText(err)}`);
        io.setExitCode(exitCodeFor(err));
      } finally {
        // One request per command: close the socket so the process can exit.
        client.stop();
      }
    };
  const cliMode = (value: string | undefined) => (value === "notify" ? "notify" : "conversation");

  const root = program.command("voicecall").description("Place and manage phone calls through voicecalld");

  root
    .command("call")
    .description("Place an outbound call")
    .requiredOption("-m, --message <text>", "What to say first")
    .option("-t, --to <phone>", "E.164 number to call (default: toNumber)")
    .option("--mode <mode>", "notify or conversation", "conversation")
    .action(
      run(async (o) => {
        const to = o.to?.trim() || undefined;
        const { callId } = await commands.initiate(
          { to, message: o.message?.trim(), mode: cliMode(o.mode) },
          "Missing --to and no toNumber configured",
        );
        return { callId };
      }),
    );

  root
    .command("start")
    .description("Place an outbound call (--to required)")
    .requiredOption("--to <phone>", "E.164 number to call")
    .option("--message <text>", "What to say first")
    .option("--mode <mode>", "notify or conversation", "conversation")
    .action(
      run(async (o) => {
        const { callId } = await commands.initiate({
          to: o.to?.trim() || undefined,
          message: o.message?.trim() || undefined,
          mode: cliMode(o.mode),
        });
        return { callId };
      }),
    );

  root
    .command("continue")
    .description("Say something, then wait for the caller's answer")
    .requiredOption("--call-id <id>", "Call ID")
    .requiredOption("--message <text>", "What to say")
    .action(run((o) => commands.continueCall(o.callId?.trim(), o.message?.trim())));

  root
    .command("speak")
    .description("Say something without waiting for an answer")
    .requiredOption("--call-id <id>", "Call ID")
    .requiredOption("--message <text>", "What to say")
    .action(run((o) => commands.speak(o.callId?.trim(), o.message?.trim())));

  root
    .command("dtmf")
    .description("Send touch tones (w = half-second wait)")
    .requiredOption("--call-id <id>", "Call ID")
    .requiredOption("--digits <digits>", "Digits, e.g. ww123#")
    .action(run((o) => commands.sendDtmf(o.callId?.trim(), o.digits?.trim())));

  root
    .command("transfer")
    .description("Hand the call to a person (cold transfer, through the toll-fraud guard)")
    .requiredOption("--call-id <id>", "Call ID")
    .requiredOption("--to <number>", "E.164 number of the person")
    .option("--message <text>", "Said to the caller before the transfer")
    .action(
      run((o) => commands.transferCall(o.callId?.trim(), o.to?.trim(), o.message?.trim() || undefined)),
    );

  root
    .command("end")
    .description("Hang up")
    .requiredOption("--call-id <id>", "Call ID")
    .action(run((o) => commands.endCall(o.callId?.trim())));

  root
    .command("status")
    .description("One call by id, or every live call")
    .option("--call-id <id>", "Call ID (ours or the provider's)")
    .option("--json", "JSON output (the default)")
    .action(
      run(async (o) => {
        const result = await commands.status(o.callId?.trim() || undefined);
        return o.callId?.trim() ? (result.call ?? { found: false }) : result;
      }),
    );

  root
    .command("tail")
    .description("Follow call events from voicecalld, one JSON object per line")
    .option("--call-id <id>", "Only this call's events")
    .action(
      run(async (o) => {
        const follower = new DaemonClient({
          socketPath: client.socketPath,
          persistent: true,
          subscription: {
            callId: o.callId?.trim() || undefined,
            onEvent: (event) => io.out(JSON.stringify(event)),
          },
        });
        try {
          await follower.ensure();
          await io.interrupted();
        } finally {
          follower.stop();
        }
        return undefined;
      }),
    );

  root
    .command("latency")
    .description("Turn latency of the most recent calls")
    .option("--last <n>", "How many recent calls to scan", "200")
    .action(
      run(async (o) => {
        const last = Number.parseInt(o.last ?? "200", 10);
        if (!Number.isFinite(last) || last < 1) {
          throw new CommandInputError("--last must be a positive whole number");
        }
        const { calls } = await client.status({ recent: last });
        return latencyReport(calls ?? []);
      }),
    );

  const doctor = (args: string[]) => async () => {
    if (!deps.doctor) {
      throw new Error("voicecall doctor is not available here");
    }
    const result = await deps.doctor(["--socket", client.socketPath, "doctor", "--json", ...args]);
    let report: unknown;
    try {
      report = JSON.parse(result.stdout);
    } catch {
      throw new Error(result.stderr.trim() || `voicecall doctor exited ${result.code}`);
    }
    if (result.code !== 0) {
      io.setExitCode(EXIT_REFUSED);
    }
    return report;
  };

  root
    .command("setup")
    .description("Check config, carrier credentials, webhook exposure, voice and state (voicecall doctor)")
    .option("--json", "JSON output (the default)")
    .action(run(doctor([])));

  root
    .command("smoke")
    .description("The setup checks, then one notify test call (a dry run without --yes)")
    .option("-t, --to <phone>", "E.164 number to call (default: toNumber)")
    .option("--yes", "Really place the call")
    .option("--json", "JSON output (the default)")
    .action(
      run(async (o) => {
        const to = o.to?.trim() || deps.toNumber;
        if (!to) {
          throw new CommandInputError("Missing --to and no toNumber configured");
        }
        return doctor(["--call", to, ...(o.yes ? ["--yes"] : [])])();
      }),
    );

  root
    .command("expose")
    .description("Publish the webhook and media-stream paths through Tailscale (funnel, serve) or stop (off)")
    .option("--mode <mode>", "off, serve or funnel", "funnel")
    .option("--path <path>", "Public path (voicecalld uses tailscale.path from its config)")
    .option("--port <port>", "Local port (voicecalld uses serve.port from its config)")
    .option("--serve-path <path>", "Local webhook path (voicecalld uses serve.path)")
    .action(
      run(async (o) => {
        const mode: string = ["off", "serve", "funnel"].includes(o.mode ?? "") ? (o.mode as string) : "funnel";
        const result = await client.expose(mode);
        if (mode === "off") {
          return { ok: true, mode: "off", publicUrl: result.publicUrl };
        }
        return { ok: true, mode, publicUrl: result.publicUrl, streamUrl: result.streamUrl };
      }),
    );
}
