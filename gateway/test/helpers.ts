/**
 * Test helpers: the real voicecalld on the mock provider (started from the
 * project's virtualenv), its live event tail, free ports, bounded waits,
 * child processes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { type AmpConnection, decodeJson } from "../src/amp.ts";
import { connectSocket } from "../src/client.ts";

export const VENV = process.env.VOICECALLD_VENV ?? path.resolve(import.meta.dirname, "../../.venv");

/** A fresh temporary folder. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
}

/** A TCP port nobody listens on right now (on 127.0.0.1). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** Call `check` until it returns a truthy value, for at most `timeoutMs`. */
export async function poll<T>(
  what: string,
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 10_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) {
        return value;
      }
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Whether something accepts connections on the UNIX socket at `socketPath`. */
export function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ path: socketPath });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Wait for `child` to exit (at most `timeoutMs`), killing it if it does not. */
export function waitExit(child: ChildProcess, timeoutMs = 10_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve(child.exitCode);
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

/** A running voicecalld on the mock provider, in its own state folder. */
export class Daemon {
  readonly stateDir: string;
  readonly socketPath: string;
  readonly configPath: string;
  child: ChildProcess | null = null;
  log = "";
  private readonly logWaiters = new Set<() => void>();

  constructor(config: Record<string, unknown> = {}, stateDir = tempDir("voicecalld")) {
    this.stateDir = stateDir;
    this.socketPath = path.join(stateDir, "control.sock");
    this.configPath = path.join(stateDir, "config.json");
    fs.writeFileSync(this.configPath, JSON.stringify(config));
  }

  /** Start a daemon with `config` (a bare plugin config) on free ports; resolves once it listens. */
  static async start(config: Record<string, unknown> = {}): Promise<Daemon> {
    const port = await freePort();
    const daemon = new Daemon({ provider: "mock", serve: { port }, ...config });
    await daemon.run();
    return daemon;
  }

  /** (Re)start the process and wait until its control socket accepts connections. */
  async run(): Promise<void> {
    const child = spawn(
      path.join(VENV, "bin", "twistd"),
      ["-n", "--pidfile=", "voicecalld", "--state-dir", this.stateDir, "--config", this.configPath],
      {
        cwd: this.stateDir,
        env: { ...process.env, VOICECALLD_SOCKET: "", VOICECALLD_CONFIG: "", OPENCLAW_CONFIG_PATH: "" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    this.child = child;
    const output = (d: Buffer) => {
      this.log += d.toString();
      for (const wake of [...this.logWaiters]) {
        wake();
      }
    };
    child.stdout!.on("data", output);
    child.stderr!.on("data", output);
    await poll(
      "voicecalld's control socket",
      async () => {
        if (child.exitCode !== null) {
          throw new Error(`voicecalld exited ${child.exitCode}: ${this.log}`);
        }
        return canConnect(this.socketPath);
      },
      20_000,
    );
  }

  /** Resolve once `check(log)` holds, looking again whenever the daemon writes; at most `timeoutMs`. */
  waitForLog(what: string, check: (log: string) => boolean, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.logWaiters.delete(look);
      };
      const look = () => {
        if (check(this.log)) {
          done();
          resolve();
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} in voicecalld's log:\n${this.log}`));
      }, timeoutMs);
      this.logWaiters.add(look);
      look();
    });
  }

  /** Stop it (SIGTERM) and wait for the process to end. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child && child.exitCode === null) {
      child.kill("SIGTERM");
      await waitExit(child);
    }
  }
}

/** Run a command to completion; resolves with its exit code and output. */
export function runCommand(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} ${args.join(" ")} took over ${options.timeoutMs} ms\n${stdout}\n${stderr}`));
    }, options.timeoutMs ?? 120_000);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** One event from the daemon's tail (docs/control-protocol.md, `Event`). */
export type DaemonEvent = { type: string; timestamp: number; callId?: string; [key: string]: unknown };

/**
 * The daemon's live events, from one `Subscribe` on its control socket, kept
 * in the order they came; tests wait on them instead of polling `Status`.
 */
export class EventTail {
  readonly events: DaemonEvent[] = [];
  private readonly connection: AmpConnection;
  private readonly waiters = new Set<() => void>();
  private closedWith: Error | null = null;

  private constructor(connection: AmpConnection) {
    this.connection = connection;
    connection.respond("Event", (box) => {
      const event = decodeJson(box, "event");
      if (event && typeof event === "object") {
        this.events.push(event as DaemonEvent);
        this.wake();
      }
    });
    connection.onClose((reason) => {
      this.closedWith = reason;
      this.wake();
    });
  }

  /** Subscribe to every call's events; resolves once the daemon said `subscribed`. */
  static async open(socketPath: string): Promise<EventTail> {
    const tail = new EventTail(await connectSocket(socketPath));
    await tail.connection.call("Subscribe", [], { timeoutMs: 10_000 });
    await tail.waitFor("the subscribed event", (events) => events.some((e) => e.type === "subscribed"));
    return tail;
  }

  /** Stop listening. */
  close(): void {
    this.connection.close();
  }

  /** Resolve with the first truthy `check(events)`, looking again on every event; at most `timeoutMs`. */
  waitFor<T>(what: string, check: (events: DaemonEvent[]) => T | undefined | null | false, timeoutMs = 10_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(look);
      };
      const look = () => {
        let value: T | undefined | null | false;
        try {
          value = check(this.events);
        } catch (err) {
          done();
          reject(err);
          return;
        }
        if (value) {
          done();
          resolve(value);
        } else if (this.closedWith !== null) {
          done();
          reject(new Error(`the event tail closed (${this.closedWith.message}) while waiting for ${what}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        const seen = this.events.map((e) => `${e.type}${e.state ? `:${e.state}` : ""}`).join(", ");
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; events so far: ${seen}`));
      }, timeoutMs);
      this.waiters.add(look);
      look();
    });
  }

  /** Wait until call `callId` enters one of `states`; resolves with that `call.state` event. */
  waitForState(callId: string, states: string[], timeoutMs = 10_000): Promise<DaemonEvent> {
    return this.waitFor(
      `call ${callId} in state ${states.join(" or ")}`,
      (events) => events.find((e) => e.callId === callId && e.type === "call.state" && states.includes(e.state as string)),
      timeoutMs,
    );
  }

  /**
   * Wait until `speaker` said `text` on call `callId` (a `call.transcript`
   * event), and, with `thenState`, until the call's latest state is that one.
   */
  waitForWords(
    callId: string,
    speaker: "bot" | "user",
    text: string,
    options: { thenState?: string; timeoutMs?: number } = {},
  ): Promise<DaemonEvent> {
    const { thenState, timeoutMs = 10_000 } = options;
    return this.waitFor(
      `${speaker} saying ${JSON.stringify(text)} on call ${callId}${thenState ? `, then ${thenState}` : ""}`,
      (events) => {
        const said = events.find(
          (e) => e.callId === callId && e.type === "call.transcript" && e.speaker === speaker && e.text === text,
        );
        return said && (thenState === undefined || latestState(events, callId) === thenState) && said;
      },
      timeoutMs,
    );
  }

  private wake(): void {
    for (const look of [...this.waiters]) {
      look();
    }
  }
}

/** The state of call `callId` as its latest `call.state` event says. */
export function latestState(events: DaemonEvent[], callId: string): string | undefined {
  for (let i = events.length - 1; i >= 0; i -= 1) {
    const e = events[i];
    if (e.callId === callId && e.type === "call.state") {
      return e.state as string;
    }
  }
  return undefined;
}
