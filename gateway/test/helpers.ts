/**
 * Test helpers: the real voicecalld on the mock provider (started from the
 * project's virtualenv), free ports, bounded polling, child processes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

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
    child.stdout!.on("data", (d: Buffer) => (this.log += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (this.log += d.toString()));
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
