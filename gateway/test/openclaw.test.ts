/**
 * The plugin inside the real OpenClaw (the pinned npm release), offline, with
 * a throwaway HOME and one config file that configures both OpenClaw and the
 * daemon: the linked install of ./gateway, the copying install of ./gateway
 * (`openclaw plugins install ./gateway`, the one command the README gives)
 * and of the built package, the `openclaw voicecall` CLI,
 * `openclaw gateway call voicecall.*`, and a conversation turn answered by
 * the gateway's agent through the shim's responder (the model is a fake
 * OpenAI-compatible server on 127.0.0.1).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { Daemon, EventTail, VENV, canConnect, freePort, poll, runCommand, tempDir, waitExit } from "./helpers.ts";

const OPENCLAW = process.env.OPENCLAW_BIN;
const PACKAGE = process.env.VOICECALLD_PLUGIN_PACKAGE;
const GATEWAY_DIR = path.resolve(import.meta.dirname, "..");
const REPO_DIR = path.resolve(GATEWAY_DIR, "..");
const VOICECALL_METHODS = [
  "voicecall.continue",
  "voicecall.continue.result",
  "voicecall.continue.start",
  "voicecall.dtmf",
  "voicecall.end",
  "voicecall.initiate",
  "voicecall.speak",
  "voicecall.start",
  "voicecall.status",
  "voicecall.transfer",
];
const TO = "+15551234567";
const MODEL_REPLY = "Noon is perfect, see you then.";

type FakeModel = {
  port: number;
  requests: any[];
  /** What the model says to a request (default MODEL_REPLY), in upstream's spoken form. */
  answer: (request: any) => string;
  close: () => void;
};

/** A fake OpenAI chat-completions server: answers `model.answer(request)` in upstream's spoken form. */
function fakeModel(): Promise<FakeModel> {
  const requests: any[] = [];
  const model = { answer: (_request: any) => MODEL_REPLY } as FakeModel;
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const request = body ? JSON.parse(body) : {};
      requests.push({ url: req.url, body: request });
      const content = JSON.stringify({ spoken: model.answer(request) });
      const id = `chatcmpl-${requests.length}`;
      if (!req.url?.includes("/chat/completions")) {
        res.writeHead(404).end();
        return;
      }
      if (request.stream) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        const chunk = (delta: unknown, finish: string | null) =>
          `data: ${JSON.stringify({
            id,
            object: "chat.completion.chunk",
            created: 1,
            model: request.model,
            choices: [{ index: 0, delta, finish_reason: finish }],
          })}\n\n`;
        res.write(chunk({ role: "assistant", content }, null));
        res.write(chunk({}, "stop"));
        res.end("data: [DONE]\n\n");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          id,
          object: "chat.completion",
          created: 1,
          model: request.model,
          choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        }),
      );
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve(
        Object.assign(model, {
          port: (server.address() as { port: number }).port,
          requests,
          close: () => server.close(),
        }),
      ),
    ),
  );
}

describe("inside the real OpenClaw", { skip: !OPENCLAW && "OPENCLAW_BIN is not set (run scripts/test.sh)" }, () => {
  const home = tempDir("openclaw-home");
  const stateDir = path.join(home, ".openclaw");
  const configPath = path.join(stateDir, "openclaw.json");
  const vcState = path.join(home, "voicecalld");
  const socketPath = path.join(vcState, "control.sock");
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: home,
    OPENCLAW_STATE_DIR: stateDir,
    OPENCLAW_CONFIG_PATH: configPath,
    VOICECALLD_SOCKET: "",
    NO_COLOR: "1",
  };
  let gatewayPort = 0;
  let daemon: Daemon;
  let tail: EventTail;
  let model: FakeModel;
  let gateway: ChildProcess | null = null;
  let gatewayLog = "";

  const openclaw = async (...args: string[]) => {
    const result = await runCommand(OPENCLAW!, args, { env, cwd: home, timeoutMs: 120_000 });
    return result;
  };
  const openclawJson = async (...args: string[]) => {
    const result = await openclaw(...args);
    assert.equal(result.code, 0, `openclaw ${args.join(" ")}: ${result.stderr}\n${result.stdout}`);
    return JSON.parse(result.stdout);
  };
  const voicecall = async (...args: string[]) => {
    const result = await runCommand(path.join(VENV, "bin", "voicecall"), ["--socket", socketPath, ...args], {
      timeoutMs: 30_000,
    });
    assert.equal(result.code, 0, result.stderr);
    return result.stdout;
  };
  const editConfig = (change: (config: any) => void) => {
    const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
    change(config);
    fs.writeFileSync(configPath, JSON.stringify(config, null, 2));
  };
  const voiceCallPlugin = async () => {
    const listed = await openclawJson("plugins", "list", "--json");
    return listed.plugins.find((p: any) => p.id === "voice-call");
  };

  before(async () => {
    fs.mkdirSync(stateDir, { recursive: true });
    fs.mkdirSync(vcState, { recursive: true });
    gatewayPort = await freePort();
    model = await fakeModel();
    fs.writeFileSync(
      configPath,
      JSON.stringify({
        gateway: { mode: "local", port: gatewayPort, bind: "loopback", auth: { mode: "none" } },
        logging: { file: path.join(home, "openclaw.log") },
      }),
    );
  });

  after(async () => {
    if (gateway !== null && gateway.exitCode === null) {
      gateway.kill("SIGTERM");
      await waitExit(gateway);
    }
    tail?.close();
    await daemon?.stop();
    model?.close();
  });

  it("installs ./gateway linked; OpenClaw loads entry.js (index.ts through it) and lists voice-call enabled", async () => {
    assert.equal(fs.existsSync(path.join(GATEWAY_DIR, "dist", "index.js")), false, "no build output in the folder");
    const install = await openclaw("plugins", "install", "-l", GATEWAY_DIR, "--force", "--accept-capabilities");
    assert.equal(install.code, 0, install.stderr + install.stdout);
    const plugin = await voiceCallPlugin();
    assert.equal(plugin.enabled, true);
    assert.equal(plugin.status, "loaded");
    assert.equal(plugin.source, path.join(GATEWAY_DIR, "entry.js"));
    assert.deepEqual(plugin.toolNames, ["voice_call"]);
  });

  it("one config for both: the daemon reads OpenClaw's file, the gateway validates it", async () => {
    editConfig((config) => {
      config.plugins.entries["voice-call"].config = {
        provider: "mock",
        toNumber: TO,
        controlSocket: socketPath,
        maxConcurrentCalls: 5,
        responseModel: "fake/voice-model",
        // The agent's first run loads OpenClaw's tools and plugins: on a busy
        // machine that alone has taken over 20 s.
        responseTimeoutMs: 90_000,
        // A legacy key users bring along: accepted by both.
        twilio: { from: "+15550001111" },
      };
      config.models = {
        mode: "merge",
        providers: {
          fake: {
            baseUrl: `http://127.0.0.1:${model.port}/v1`,
            apiKey: "sk-test",
            api: "openai-completions",
            models: [
              {
                id: "voice-model",
                name: "Fake voice model",
                reasoning: false,
                input: ["text"],
                cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
                contextWindow: 32000,
                maxTokens: 1024,
              },
            ],
          },
        },
      };
      config.agents = { defaults: { model: { primary: "fake/voice-model" } } };
    });
    const port = await freePort();
    editConfig((config) => (config.plugins.entries["voice-call"].config.serve = { port }));
    const bad = await openclaw("config", "set", "plugins.entries.voice-call.config.nope", "1");
    assert.notEqual(bad.code, 0, "an unknown plugin key must be rejected");
    daemon = new Daemon({}, vcState);
    Object.assign(daemon, { configPath });
    await daemon.run();
    assert.ok(await canConnect(socketPath));
    tail = await EventTail.open(socketPath);
  });

  it("openclaw voicecall call/status/speak/end drive the daemon", async () => {
    const placed = await openclawJson("voicecall", "call", "--to", TO, "--message", "Hello from the OpenClaw CLI");
    assert.deepEqual(Object.keys(placed), ["callId"]);
    const { callId } = placed;
    const seen = JSON.parse(await voicecall("--json", "status", "--call-id", callId));
    assert.equal(seen.callId, callId);
    assert.equal(seen.mode, "conversation");
    await tail.waitForState(callId, ["active", "listening"]);
    const status = await openclawJson("voicecall", "status", "--call-id", callId);
    assert.equal(status.callId, callId);
    const live = await openclawJson("voicecall", "status");
    assert.ok(live.calls.some((c: any) => c.callId === callId));
    assert.deepEqual(await openclawJson("voicecall", "speak", "--call-id", callId, "--message", "Still there?"), {
      success: true,
    });
    assert.deepEqual(await openclawJson("voicecall", "end", "--call-id", callId), { success: true });
    const ended = JSON.parse(await voicecall("--json", "status", "--call-id", callId));
    assert.equal(ended.state, "hangup-bot");
    assert.ok(ended.transcript.some((e: any) => e.text === "Still there?"));
  });

  it("says the daemon is down in one sentence, with no stack trace", async () => {
    const down = await runCommand(OPENCLAW!, ["voicecall", "status"], {
      env: { ...env, VOICECALLD_SOCKET: path.join(home, "missing.sock") },
      cwd: home,
    });
    assert.equal(down.code, 3);
    assert.equal(
      down.stderr.trim().split("\n").at(-1),
      `voicecall: voicecalld is not reachable at ${path.join(home, "missing.sock")} (no socket there); ` +
        "start it with `systemctl start voicecalld` or `make run`",
    );
    assert.doesNotMatch(down.stderr, /\n\s+at /);
  });

  const call = (method: string, params: unknown) =>
    openclaw("gateway", "call", method, "--params", JSON.stringify(params), "--port", String(gatewayPort), "--json");

  /** Run `openclaw gateway run`; resolves once the shim's responder is registered and the methods answer. */
  const startGateway = async () => {
    gatewayLog = "";
    const registrations = (log: string) => log.split("responder openclaw-gateway registered").length;
    const before = registrations(daemon.log);
    gateway = spawn(
      OPENCLAW!,
      ["gateway", "run", "--allow-unconfigured", "--auth", "none", "--port", String(gatewayPort), "--bind", "loopback"],
      { env, cwd: home, stdio: ["ignore", "pipe", "pipe"] },
    );
    gateway.stdout!.on("data", (d: Buffer) => (gatewayLog += d.toString()));
    gateway.stderr!.on("data", (d: Buffer) => (gatewayLog += d.toString()));
    // The plugin's service connects once the gateway listens: wait for the
    // daemon to log the responder, then for the methods to answer.
    const exited = new Promise<never>((_, reject) =>
      gateway!.once("exit", (code) => reject(new Error(`gateway exited ${code}: ${gatewayLog}`))),
    );
    exited.catch(() => {});
    await Promise.race([
      daemon.waitForLog("the shim's responder registered", (log) => registrations(log) > before, 90_000),
      exited,
    ]);
    await poll(
      "the gateway's voicecall methods",
      async () => {
        if (gateway!.exitCode !== null) {
          throw new Error(`gateway exited: ${gatewayLog}`);
        }
        return (await call("voicecall.status", {})).code === 0;
      },
      90_000,
      500,
    );
  };

  it("openclaw gateway call voicecall.* answer with upstream's payloads; the agent answers a turn", async () => {
    await startGateway();

    const started = await call("voicecall.initiate", { message: "Calling about lunch", mode: "conversation" });
    assert.equal(started.code, 0, started.stderr);
    const payload = JSON.parse(started.stdout);
    assert.deepEqual(Object.keys(payload).sort(), ["callId", "initiated"]);
    assert.equal(payload.initiated, true);
    const { callId } = payload;
    const status = JSON.parse((await call("voicecall.status", { callId })).stdout);
    assert.equal(status.found, true);
    assert.equal(status.call.callId, callId);
    assert.deepEqual(JSON.parse((await call("voicecall.status", { callId: "nope" })).stdout), { found: false });
    const refused = await call("voicecall.initiate", {});
    assert.notEqual(refused.code, 0);
    assert.match(refused.stdout + refused.stderr, /message required/);

    await tail.waitForState(callId, ["active", "listening"]);
    await voicecall("simulate", "say", "--call-id", callId, "--text", "Can we meet at noon?");
    await tail.waitForWords(callId, "bot", MODEL_REPLY, { thenState: "listening", timeoutMs: 150_000 });
    const record = JSON.parse(await voicecall("--json", "status", "--call-id", callId));
    assert.ok(record.transcript.some((e: any) => e.speaker === "bot" && e.text === MODEL_REPLY));
    assert.ok(model.requests.length >= 1, "the fake model was asked");
    const asked = JSON.stringify(model.requests.at(-1).body);
    assert.match(asked, /Can we meet at noon\?/);
    assert.match(asked, /Conversation so far/);
    assert.equal(record.state, "listening");

    assert.deepEqual(JSON.parse((await call("voicecall.end", { callId })).stdout), { success: true });
    gateway!.kill("SIGTERM");
    await waitExit(gateway!, 15_000);
  });

  it("two dialled numbers, two agents: each answers its own calls in its own session; a consult goes to the call's agent", async () => {
    const SALES = "+15550002222";
    const SUPPORT = "+15550003333";
    const CALLER = "+15557654321";
    editConfig((config) => {
      // Direct tool schemas (not Tool Search's deferred catalog), so the test sees which tools a run is offered.
      config.tools = { ...config.tools, toolSearch: false };
      config.agents = {
        defaults: { model: { primary: "fake/voice-model" } },
        entries: {
          sales: { identity: { name: "Sally" } },
          support: { identity: { name: "Bob" } },
        },
      };
      Object.assign(config.plugins.entries["voice-call"].config, {
        inboundPolicy: "open",
        numbers: {
          [SALES]: { agentId: "sales", inboundGreeting: "Sales, Sally speaking." },
          [SUPPORT]: { agentId: "support", inboundGreeting: "Support, Bob speaking." },
        },
      });
    });
    // The fake model tells the agents apart by the name in the system prompt OpenClaw sends it.
    model.answer = (request) => {
      const asked = JSON.stringify(request.messages ?? []);
      const name = asked.includes("You are Sally") ? "Sally" : asked.includes("You are Bob") ? "Bob" : "nobody";
      return asked.includes("consulting you") ? `${name} checked: it ships Tuesday.` : `${name} here, happy to help.`;
    };
    await daemon.stop();
    await daemon.run();
    tail.close();
    tail = await EventTail.open(socketPath);
    await startGateway();

    const answered = async (to: string, words: string, reply: string) => {
      const callId = (await voicecall("simulate", "inbound", "--from", CALLER, "--to", to)).trim();
      await tail.waitForState(callId, ["listening"]);
      await voicecall("simulate", "say", "--call-id", callId, "--text", words);
      await tail.waitForWords(callId, "bot", reply, { thenState: "listening", timeoutMs: 150_000 });
      return callId;
    };
    const sales = await answered(SALES, "Do you have kettles?", "Sally here, happy to help.");
    const support = await answered(SUPPORT, "My kettle broke.", "Bob here, happy to help.");
    const record = JSON.parse(await voicecall("--json", "status", "--call-id", sales));
    assert.equal(record.transcript[0].text, "Sales, Sally speaking.");
    assert.equal(record.metadata.route.agentId, "sales");

    const consulted = JSON.parse(
      await voicecall("--json", "simulate", "consult", "--call-id", support, "--text", "When does the new kettle ship?"),
    );
    assert.deepEqual(consulted, { text: "Bob checked: it ships Tuesday." });
    const consult = model.requests.at(-1).body;
    assert.match(JSON.stringify(consult.messages), /When does the new kettle ship\?/);
    // toolPolicy safe-read-only (the default): the consult run is offered read and search tools only.
    const toolNames = (body: any) => (body.tools ?? []).map((t: any) => t.function?.name ?? t.name);
    const safe = ["read", "web_search", "web_fetch", "x_search", "memory_search", "memory_get"];
    assert.deepEqual(
      toolNames(consult).filter((name: string) => !safe.includes(name)),
      [],
      `a consult is offered only read and search tools: ${toolNames(consult)}`,
    );
    const reply = model.requests.find((r) => JSON.stringify(r.body.messages ?? []).includes("My kettle broke.")).body;
    assert.ok(
      toolNames(reply).some((name: string) => !safe.includes(name)),
      `a reply runs with the agent's normal tools: ${toolNames(reply)}`,
    );

    // Each agent's calls are in that agent's own per-phone voice session.
    for (const [agent, callId] of [["sales", sales], ["support", support]]) {
      const listed = await openclawJson("sessions", "--agent", agent, "--json");
      const keys = JSON.stringify(listed);
      assert.ok(keys.includes(`agent:${agent}:voice:15557654321`), `${agent}'s session: ${keys}`);
      await voicecall("end", "--call-id", callId);
    }
    gateway!.kill("SIGTERM");
    await waitExit(gateway!, 15_000);
  });

  /** A second, fresh OpenClaw home (its own state folder and config) on the same gateway port. */
  const freshHome = (prefix: string) => {
    const dir = tempDir(prefix);
    const state = path.join(dir, ".openclaw");
    const config = path.join(state, "openclaw.json");
    fs.mkdirSync(state, { recursive: true });
    fs.writeFileSync(
      config,
      JSON.stringify({
        gateway: { mode: "local", port: gatewayPort, bind: "loopback", auth: { mode: "none" } },
        logging: { file: path.join(dir, "openclaw.log") },
      }),
    );
    const envHere = { ...env, HOME: dir, OPENCLAW_STATE_DIR: state, OPENCLAW_CONFIG_PATH: config };
    const run = (args: string[], cwd = dir) => runCommand(OPENCLAW!, args, { env: envHere, cwd, timeoutMs: 120_000 });
    const configure = (pluginConfig: Record<string, unknown>) => {
      const written = JSON.parse(fs.readFileSync(config, "utf8"));
      written.plugins.entries["voice-call"].config = pluginConfig;
      fs.writeFileSync(config, JSON.stringify(written, null, 2));
    };
    return { dir, state, run, configure };
  };

  it("`openclaw plugins install ./gateway` copies the folder; the copy loads and answers", async () => {
    // The README's one command, run from the checkout, into a fresh OpenClaw home.
    const fresh = freshHome("openclaw-home-folder");
    const install = await fresh.run(["plugins", "install", "./gateway", "--force", "--accept-capabilities"], REPO_DIR);
    assert.equal(install.code, 0, install.stderr + install.stdout);
    const installed = path.join(fresh.state, "extensions", "voice-call");
    assert.ok(fs.existsSync(path.join(installed, "entry.js")), "a copy in OpenClaw's own folder");
    assert.equal(fs.existsSync(path.join(installed, "dist")), false, "no build output was needed");
    fresh.configure({ controlSocket: socketPath, toNumber: TO });

    const inspected = await fresh.run(["plugins", "inspect", "voice-call", "--runtime", "--json"]);
    assert.equal(inspected.code, 0, inspected.stderr + inspected.stdout);
    const report = JSON.parse(inspected.stdout);
    assert.equal(report.plugin.enabled, true, JSON.stringify(report.plugin));
    assert.equal(report.plugin.status, "loaded", JSON.stringify(report.diagnostics));
    assert.equal(report.plugin.source, path.join(installed, "entry.js"));
    assert.equal(report.install.source, "path");
    assert.deepEqual(report.plugin.toolNames, ["voice_call"]);
    assert.deepEqual([...report.gatewayMethods].sort(), VOICECALL_METHODS);
    assert.deepEqual(report.cliCommands, ["voicecall"]);
    assert.deepEqual(
      report.diagnostics.filter((d: any) => d.level === "error"),
      [],
      "no load errors",
    );

    const status = await fresh.run(["voicecall", "status"]);
    assert.equal(status.code, 0, status.stderr);
    const live = JSON.parse(status.stdout);
    assert.equal(live.found, true);
    assert.ok(Array.isArray(live.calls));
  });

  it("installs the built package by copying; it loads dist/index.js and works", { skip: !PACKAGE && "no built package" }, async () => {
    // A user who installs the published form.
    const fresh = freshHome("openclaw-home-copy");
    const state2 = fresh.state;
    const run2 = (...args: string[]) => fresh.run(args);
    const install = await run2("plugins", "install", PACKAGE!, "--force", "--accept-capabilities");
    assert.equal(install.code, 0, install.stderr + install.stdout);
    fresh.configure({ controlSocket: socketPath, toNumber: TO });
    const listed = await run2("plugins", "list", "--json");
    const plugin = JSON.parse(listed.stdout).plugins.find((p: any) => p.id === "voice-call");
    assert.equal(plugin.enabled, true, JSON.stringify(plugin) + install.stdout + install.stderr);
    assert.equal(plugin.status, "loaded");
    assert.match(plugin.source, /dist\/index\.js$/);
    assert.ok(plugin.source.startsWith(state2), "a copy in OpenClaw's own folder");
    const status = await run2("voicecall", "status");
    assert.equal(status.code, 0, status.stderr);
    const live = JSON.parse(status.stdout);
    assert.equal(live.found, true);
    assert.ok(Array.isArray(live.calls));
  });
});
