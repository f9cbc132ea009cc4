/**
 * `openclaw voicecall setup|smoke` through the plugin, running the real
 * `voicecall doctor` of the venv against a real daemon on the mock provider.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import type { CliIo, CommandLike } from "../src/cli.ts";
import { spawnDoctor } from "../src/doctor.ts";
import { type PluginApi, registerVoiceCall } from "../src/plugin.ts";
import { Daemon, VENV } from "./helpers.ts";

class Command implements CommandLike {
  children = new Map<string, Command>();
  run?: (o: Record<string, string | undefined>) => unknown;
  command(name: string) {
    const child = new Command();
    this.children.set(name, child);
    return child;
  }
  description() {
    return this;
  }
  option() {
    return this;
  }
  requiredOption() {
    return this;
  }
  action(fn: (o: Record<string, string | undefined>) => unknown) {
    this.run = fn;
    return this;
  }
}

describe("voicecall setup and smoke", () => {
  let daemon: Daemon;
  const program = new Command();
  const output = { out: [] as string[], err: [] as string[], code: 0 };
  const io: CliIo = {
    out: (line) => output.out.push(line),
    err: (line) => output.err.push(line),
    setExitCode: (code) => (output.code = code),
    interrupted: () => new Promise(() => {}),
  };
  const seen: string[][] = [];

  before(async () => {
    daemon = await Daemon.start({ toNumber: "+15551234567" });
    const env = {
      PATH: process.env.PATH,
      HOME: daemon.stateDir,
      VOICECALLD_CONFIG: daemon.configPath,
      VOICECALLD_STATE_DIR: daemon.stateDir,
    };
    const runner = spawnDoctor(path.join(VENV, "bin", "voicecall"), env);
    const api = {
      pluginConfig: { controlSocket: daemon.socketPath, toNumber: "+15551234567" },
      registrationMode: "cli-metadata",
      logger: { info: () => {}, warn: () => {} },
      registerTool: () => {},
      registerGatewayMethod: () => {},
      registerCli: (registrar: (o: { program: CommandLike }) => void) => registrar({ program }),
      registerService: () => {},
    } as unknown as PluginApi;
    registerVoiceCall(api, {
      env: {},
      cliIo: io,
      doctor: (args) => {
        seen.push(args);
        return runner(args);
      },
    });
  });
  after(() => daemon?.stop());

  async function cli(name: string, options: Record<string, string | undefined> = {}) {
    output.out.length = 0;
    output.err.length = 0;
    output.code = 0;
    await program.children.get("voicecall")!.children.get(name)!.run!(options);
    return { report: JSON.parse(output.out.join("\n")), code: output.code, err: output.err.join("\n") };
  }

  it("setup --json prints the doctor's report, exit 1 when a check failed", async () => {
    const { report, code, err } = await cli("setup", { json: "true" });
    assert.equal(err, "");
    assert.equal(typeof report.ok, "boolean");
    const ids = report.checks.map((c: { id: string }) => c.id);
    assert.deepEqual(ids.slice(0, 4), ["config", "carrier-credentials", "webhook-exposure", "webhook-selftest"]);
    for (const check of report.checks) {
      assert.deepEqual(Object.keys(check).sort(), ["detail", "fix", "id", "status"]);
      assert.ok(["ok", "warn", "fail"].includes(check.status));
    }
    const byId = Object.fromEntries(report.checks.map((c: { id: string }) => [c.id, c]));
    assert.equal(byId["config"].status, "ok");
    assert.equal(byId["control-socket"].status, "ok");
    assert.equal(code, report.ok ? 0 : 1);
    assert.deepEqual(seen.at(-1), ["--socket", daemon.socketPath, "doctor", "--json"]);
  });

  it("smoke without --yes is a dry run to toNumber", async () => {
    const { report } = await cli("smoke", {});
    const call = report.checks.find((c: { id: string }) => c.id === "test-call");
    assert.match(call.detail, /dry run: would call \+15551234567/);
    assert.deepEqual(seen.at(-1)?.slice(-2), ["--call", "+15551234567"]);
  });

  it("smoke --yes places the notify call", async () => {
    const { report } = await cli("smoke", { to: "+15557654321", yes: "true" });
    const call = report.checks.find((c: { id: string }) => c.id === "test-call");
    assert.equal(call.status, "ok", call.detail);
    assert.match(call.detail, /placed call .* to \+15557654321/);
  });
});
