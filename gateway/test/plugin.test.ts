/**
 * The plugin against a recording fake of OpenClaw's plugin api and the real
 * voicecalld on the mock provider: every tool action and gateway method, the
 * validation messages, the CLI, the responder, the daemon down, and the
 * daemon restarted mid-session.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import type { CliIo, CommandLike } from "../src/cli.ts";
import { type PluginApi, registerVoiceCall } from "../src/plugin.ts";
import { type ReplyRequest, RunCancelled } from "../src/responder.ts";
import { Daemon, EventTail, poll, tempDir } from "./helpers.ts";

const TO = "+15551234567";
const APOLOGY = "Sorry, I can't answer that right now. Could you say it again?";

type Tool = { name: string; execute: (id: string, params: unknown) => Promise<any> };
type Method = (o: { params: any; respond: (ok: boolean, payload?: unknown) => void }) => Promise<void>;

/** A CLI command tree that records actions, enough of Commander for the plugin. */
class FakeCommand implements CommandLike {
  children = new Map<string, FakeCommand>();
  defaults: Record<string, string> = {};
  run?: (o: Record<string, string | undefined>) => unknown;
  command(name: string) {
    const child = new FakeCommand();
    this.children.set(name, child);
    return child;
  }
  description() {
    return this;
  }
  option(flags: string, _d?: string, value?: string) {
    const long = /--([a-z-]+)/.exec(flags)![1].replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (value !== undefined) {
      this.defaults[long] = value;
    }
    return this;
  }
  requiredOption(flags: string, d?: string, value?: string) {
    return this.option(flags, d, value);
  }
  action(fn: (o: Record<string, string | undefined>) => unknown) {
    this.run = fn;
    return this;
  }
}

/** A recording stand-in for OpenClaw's plugin api. */
function fakeApi(pluginConfig: Record<string, unknown>) {
  const tools = new Map<string, Tool>();
  const methods = new Map<string, { handler: Method; scope?: string }>();
  const services: Array<{ id: string; start: () => unknown; stop?: () => unknown }> = [];
  const program = new FakeCommand();
  const warnings: string[] = [];
  const cli = {
    out: [] as string[],
    err: [] as string[],
    code: 0,
    interrupt: () => {},
  };
  const io: CliIo = {
    out: (line) => cli.out.push(line),
    err: (line) => cli.err.push(line),
    setExitCode: (code) => (cli.code = code),
    interrupted: () => new Promise<void>((resolve) => (cli.interrupt = resolve)),
  };
  const api: PluginApi = {
    pluginConfig,
    registrationMode: "full",
    logger: { info: () => {}, warn: (m) => warnings.push(m) },
    registerTool: (tool) => tools.set(tool.name, tool as Tool),
    registerGatewayMethod: (name, handler, options) =>
      methods.set(name, { handler: handler as Method, scope: options?.scope }),
    registerCli: (registrar) => void registrar({ program }),
    registerService: (service) => services.push(service),
  };
  return {
    api,
    io,
    output: cli,
    tools,
    methods,
    services,
    warnings,
    async tool(params: unknown) {
      const result = await tools.get("voice_call")!.execute("t1", params);
      assert.deepEqual(JSON.parse(result.content[0].text), result.details);
      return result.details;
    },
    method(name: string, params: unknown): Promise<[boolean, any]> {
      return new Promise((resolve) => {
        void methods.get(name)!.handler({ params, respond: (ok, payload) => resolve([ok, payload]) });
      });
    },
    async cli(name: string, options: Record<string, string> = {}) {
      const command = program.children.get("voicecall")!.children.get(name)!;
      cli.out.length = 0;
      cli.err.length = 0;
      cli.code = 0;
      await command.run!({ ...command.defaults, ...options });
      return { out: cli.out.join("\n"), err: cli.err.join("\n"), code: cli.code };
    },
  };
}

/** Wait for the daemon's event that call `callId` was answered; then its status through the tool. */
async function waitAnswered(tail: EventTail, plugin: ReturnType<typeof fakeApi>, callId: string) {
  await tail.waitForState(callId, ["active", "listening"]);
  return plugin.tool({ action: "get_status", callId });
}

describe("validation, as upstream words it", () => {
  const plugin = fakeApi({ controlSocket: "/nonexistent/voicecalld.sock" });
  registerVoiceCall(plugin.api, { env: {}, cliIo: plugin.io });

  it("registers the tool, every gateway method and the CLI", () => {
    assert.deepEqual([...plugin.tools.keys()], ["voice_call"]);
    assert.deepEqual([...plugin.methods.keys()].sort(), [
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
    ]);
    assert.equal(plugin.methods.get("voicecall.status")!.scope, "operator.read");
    assert.equal(plugin.methods.get("voicecall.transfer")!.scope, "operator.write");
    assert.equal(plugin.methods.get("voicecall.end")!.scope, "operator.write");
    assert.equal(plugin.services[0].id, "voicecall");
  });

  it("tool actions", async () => {
    const cases: Array<[unknown, string]> = [
      [{ action: "initiate_call", message: "  " }, "message required"],
      [{ action: "initiate_call", message: "hi" }, "to required"],
      [{ action: "continue_call", callId: "x" }, "callId and message required"],
      [{ action: "speak_to_user", message: "hi" }, "callId and message required"],
      [{ action: "send_dtmf", callId: "x" }, "callId and digits required"],
      [{ action: "transfer_call", callId: "x" }, "callId and to required"],
      [{ action: "transfer_call", to: "+15558675309" }, "callId and to required"],
      [{ action: "end_call" }, "callId required"],
      [{ action: "get_status", callId: " " }, "callId required"],
      [{ mode: "status" }, "sid required for status"],
      [{ mode: "call", message: "hi" }, "to required for call"],
      [{}, "to required for call"],
    ];
    for (const [params, error] of cases) {
      assert.deepEqual(await plugin.tool(params), { error }, JSON.stringify(params));
    }
  });

  it("gateway methods", async () => {
    const cases: Array<[string, unknown, string]> = [
      ["voicecall.initiate", { to: TO }, "message required"],
      ["voicecall.initiate", { message: "hi" }, "to required"],
      ["voicecall.start", { message: "hi" }, "to required"],
      ["voicecall.continue", { callId: "x" }, "callId and message required"],
      ["voicecall.continue.start", { message: "x" }, "callId and message required"],
      ["voicecall.continue.result", {}, "operationId required"],
      ["voicecall.continue.result", { operationId: "nope" }, "operation not found"],
      ["voicecall.speak", {}, "callId and message required"],
      ["voicecall.dtmf", { callId: "x" }, "callId and digits required"],
      ["voicecall.transfer", { callId: "x", to: " " }, "callId and to required"],
      ["voicecall.end", {}, "callId required"],
    ];
    for (const [name, params, error] of cases) {
      assert.deepEqual(await plugin.method(name, params), [false, { error }], name);
    }
  });

  it("says in one sentence that the daemon is not running, everywhere", async () => {
    const expected =
      "voicecalld is not reachable at /nonexistent/voicecalld.sock (no socket there); start it with " +
      "`systemctl start voicecalld` or `make run`";
    assert.deepEqual(await plugin.tool({ action: "get_status", callId: "x" }), { error: expected });
    assert.deepEqual(await plugin.method("voicecall.status", {}), [false, { error: expected }]);
    const cli = await plugin.cli("status");
    assert.equal(cli.err, `voicecall: ${expected}`);
    assert.equal(cli.code, 3);
  });

  it("disabled in the config: upstream's message", async () => {
    const off = fakeApi({ enabled: false });
    registerVoiceCall(off.api, { env: {}, cliIo: off.io });
    assert.deepEqual(await off.tool({ action: "end_call", callId: "x" }), {
      error: "Voice call disabled in plugin config",
    });
  });
});

describe("against the real daemon", () => {
  let daemon: Daemon;
  const requests: ReplyRequest[] = [];
  let reply: (r: ReplyRequest) => Promise<Array<{ text?: string; isReasoning?: boolean }>> = async () => [
    { text: "Let me think.", isReasoning: true },
    { text: '{"spoken":"Sure, noon works."}' },
  ];
  let plugin: ReturnType<typeof fakeApi>;
  let registered: ReturnType<typeof registerVoiceCall>;
  let tail: EventTail;

  before(async () => {
    daemon = await Daemon.start({ toNumber: TO, maxConcurrentCalls: 5 });
    plugin = fakeApi({ controlSocket: daemon.socketPath, toNumber: TO });
    registered = registerVoiceCall(plugin.api, {
      env: {},
      cliIo: plugin.io,
      agentRun: (request) => {
        requests.push(request);
        return reply(request);
      },
    });
    plugin.services[0].start();
    await registered.responder!.whenConnected();
    tail = await EventTail.open(daemon.socketPath);
  });

  after(async () => {
    tail?.close();
    plugin.services[0].stop?.();
    await daemon.stop();
  });

  it("drives a call through every tool action", async () => {
    const started = await plugin.tool({ action: "initiate_call", message: "Hello from the test", mode: "conversation" });
    assert.deepEqual(Object.keys(started).sort(), ["callId", "initiated"]);
    assert.equal(started.initiated, true);
    const { callId } = started;
    const status = await waitAnswered(tail, plugin, callId);
    assert.equal(status.found, true);
    assert.equal(status.call.to, TO);
    assert.deepEqual(await plugin.tool({ action: "speak_to_user", callId, message: "One moment." }), { success: true });
    assert.deepEqual(await plugin.tool({ action: "send_dtmf", callId, digits: "12#" }), { success: true });
    const answer = plugin.tool({ action: "continue_call", callId, message: "What time suits you?" });
    await tail.waitForWords(callId, "bot", "What time suits you?", { thenState: "listening" });
    const waiting = await plugin.tool({ action: "get_status", callId });
    assert.equal(waiting.call.state, "listening");
    assert.ok(waiting.call.transcript.some((e: any) => e.text === "What time suits you?"));
    await registered.client.simulate({ action: "say", callId, text: "Tomorrow at ten." });
    assert.deepEqual(await answer, { success: true, transcript: "Tomorrow at ten." });
    const list = await plugin.method("voicecall.status", {});
    assert.equal(list[0], true);
    assert.ok(list[1].calls.some((c: any) => c.callId === callId));
    assert.deepEqual(await plugin.tool({ action: "end_call", callId }), { success: true });
    const ended = await plugin.tool({ mode: "status", sid: callId });
    assert.equal(ended.call.state, "hangup-bot");
    const refused = await plugin.tool({ action: "speak_to_user", callId, message: "hello?" });
    assert.match(refused.error, /^(UNKNOWN_CALL|CALL_ENDED): /);
    assert.deepEqual(await plugin.tool({ action: "get_status", callId: "no-such-call" }), { found: false });
    const legacy = await plugin.tool({ message: "Legacy form", to: TO });
    assert.equal(legacy.initiated, true);
    await plugin.tool({ action: "end_call", callId: legacy.callId });
  });

  it("answers every gateway method with upstream's payloads", async () => {
    const [ok, started] = await plugin.method("voicecall.initiate", { message: "Gateway call", mode: "conversation" });
    assert.equal(ok, true);
    assert.deepEqual(Object.keys(started).sort(), ["callId", "initiated"]);
    const { callId } = started;
    await waitAnswered(tail, plugin, callId);
    const [found, status] = await plugin.method("voicecall.status", { callId });
    assert.equal(found, true);
    assert.equal(status.found, true);
    assert.equal(status.call.callId, callId);
    assert.deepEqual(await plugin.method("voicecall.status", { sid: "nope" }), [true, { found: false }]);
    assert.deepEqual(await plugin.method("voicecall.speak", { callId, message: "Hi" }), [true, { success: true }]);
    assert.deepEqual(await plugin.method("voicecall.dtmf", { callId, digits: "w1" }), [true, { success: true }]);
    const [, op] = await plugin.method("voicecall.continue.start", { callId, message: "Your name?" });
    assert.equal(op.status, "pending");
    assert.equal(op.pollTimeoutMs, 180_000 + 8_000 + 30_000);
    assert.deepEqual(await plugin.method("voicecall.continue.result", { operationId: op.operationId }), [
      true,
      { operationId: op.operationId, status: "pending", pollTimeoutMs: op.pollTimeoutMs },
    ]);
    await tail.waitForWords(callId, "bot", "Your name?", { thenState: "listening" });
    assert.equal((await plugin.tool({ action: "get_status", callId })).call.state, "listening");
    await registered.client.simulate({ action: "say", callId, text: "Ada." });
    const done = await poll("continue result", async () => {
      const [, r] = await plugin.method("voicecall.continue.result", { operationId: op.operationId });
      return r.status === "completed" && r;
    });
    assert.deepEqual(done, { operationId: op.operationId, status: "completed", result: { success: true, transcript: "Ada." } });
    assert.deepEqual(await plugin.method("voicecall.continue.result", { operationId: op.operationId }), [
      false,
      { error: "operation not found" },
    ]);
    assert.deepEqual(await plugin.method("voicecall.end", { callId }), [true, { success: true }]);
    const [failed, error] = await plugin.method("voicecall.dtmf", { callId, digits: "1" });
    assert.equal(failed, false);
    assert.match(error.error, /^(UNKNOWN_CALL|CALL_ENDED): /);
    const [startOk, viaStart] = await plugin.method("voicecall.start", { to: TO, message: "Legacy start" });
    assert.equal(startOk, true);
    assert.equal(viaStart.initiated, true);
    assert.deepEqual(await plugin.method("voicecall.end", { callId: viaStart.callId }), [true, { success: true }]);
    const [refused, why] = await plugin.method("voicecall.initiate", { message: "x", to: "+19005550100" });
    assert.equal(refused, false);
    assert.match(why.error, /^NOT_ALLOWED: /);
  });

  it("transfers a call to a person: tool action, gateway method and CLI", async () => {
    const person = "+15558675309";
    const viaTool = await plugin.tool({ action: "initiate_call", message: "Transfer me", mode: "conversation" });
    await waitAnswered(tail, plugin, viaTool.callId);
    const handed = await plugin.tool({
      action: "transfer_call",
      callId: viaTool.callId,
      to: person,
      message: "Putting you through.",
    });
    assert.deepEqual(handed, { success: true });
    await tail.waitForState(viaTool.callId, ["transferred"]);
    const after = await plugin.tool({ action: "get_status", callId: viaTool.callId });
    assert.equal(after.call.state, "transferred");
    assert.equal(after.call.endReason, "transferred");
    assert.equal(after.call.metadata.transferredTo, person);
    assert.ok(after.call.transcript.some((e: any) => e.speaker === "bot" && e.text === "Putting you through."));
    const again = await plugin.tool({ action: "transfer_call", callId: viaTool.callId, to: person });
    assert.match(again.error, /^CALL_ENDED: /);

    const [, started] = await plugin.method("voicecall.initiate", { message: "Gateway transfer", mode: "conversation" });
    await waitAnswered(tail, plugin, started.callId);
    const [refused, why] = await plugin.method("voicecall.transfer", { callId: started.callId, to: "+19005550100" });
    assert.equal(refused, false);
    assert.match(why.error, /^NOT_ALLOWED: .*premium-rate/);
    const [bad, invalid] = await plugin.method("voicecall.transfer", { callId: started.callId, to: "555" });
    assert.equal(bad, false);
    assert.match(invalid.error, /^INVALID_ARGUMENT: to must be an E\.164 number/);
    assert.deepEqual(await plugin.method("voicecall.transfer", { callId: started.callId, to: person }), [
      true,
      { success: true },
    ]);
    await tail.waitForState(started.callId, ["transferred"]);

    const call = JSON.parse((await plugin.cli("call", { message: "CLI transfer" })).out);
    await waitAnswered(tail, plugin, call.callId);
    const cli = await plugin.cli("transfer", { callId: call.callId, to: person, message: "One moment." });
    assert.equal(cli.code, 0, cli.err);
    assert.deepEqual(JSON.parse(cli.out), { success: true });
    await tail.waitForState(call.callId, ["transferred"]);
    const refusedCli = await plugin.cli("transfer", { callId: call.callId, to: person });
    assert.equal(refusedCli.code, 1);
    assert.match(refusedCli.err, /^voicecall: CALL_ENDED: /);
  });

  it("runs the CLI commands", async () => {
    const call = await plugin.cli("call", { message: "CLI call" });
    assert.equal(call.code, 0, call.err);
    const { callId } = JSON.parse(call.out);
    const status = await plugin.cli("status", { callId });
    assert.equal(JSON.parse(status.out).callId, callId);
    assert.equal(JSON.parse(status.out).mode, "conversation");
    const all = JSON.parse((await plugin.cli("status")).out);
    assert.ok(all.calls.some((c: any) => c.callId === callId));
    assert.deepEqual(JSON.parse((await plugin.cli("end", { callId })).out), { success: true });
    const missing = await plugin.cli("status", { callId: "nope" });
    assert.deepEqual(JSON.parse(missing.out), { found: false });
    const latency = JSON.parse((await plugin.cli("latency")).out);
    assert.ok(latency.recordsScanned >= 1);
    assert.ok(latency.turnLatency.count >= 1);
    assert.equal(typeof latency.stages, "object");
    const expose = await plugin.cli("expose");
    assert.equal(expose.code, 1);
    assert.match(expose.err, /^voicecall: EXPOSE_FAILED: tailscale is not installed/);
    const speak = await plugin.cli("speak", { callId, message: "hello" });
    assert.equal(speak.code, 1);
    assert.match(speak.err, /^voicecall: (UNKNOWN_CALL|CALL_ENDED): /);
  });

  it("tail prints the daemon's events, one JSON object per line, until interrupted", async () => {
    const connections = (log: string) => log.split("control.subscribed").length;
    const before = connections(daemon.log);
    const tailing = plugin.cli("tail");
    await daemon.waitForLog("the subscription", (log) => connections(log) > before);
    const { callId } = await plugin.tool({ action: "initiate_call", message: "Tail me", mode: "notify" });
    const events = await poll("the call's events", () => {
      const parsed = plugin.output.out.map((line) => JSON.parse(line));
      const mine = parsed.filter((e) => e.callId === callId);
      // call.created may come before Subscribe lands; ringing and answered come later.
      return mine.filter((e) => e.type === "call.state").length >= 2 && parsed;
    });
    for (const event of events) {
      assert.equal(typeof event.type, "string");
      assert.equal(typeof event.timestamp, "number");
    }
    plugin.output.interrupt();
    const result = await tailing;
    assert.equal(result.code, 0);
    await plugin.tool({ action: "end_call", callId });
  });

  it("answers conversation turns with the agent's words", async () => {
    requests.length = 0;
    const { callId } = await plugin.tool({ action: "initiate_call", message: "Calling about lunch", mode: "conversation" });
    await waitAnswered(tail, plugin, callId);
    await registered.client.simulate({ action: "say", callId, text: "Can we meet at noon?" });
    await tail.waitForWords(callId, "bot", "Sure, noon works.", { thenState: "listening" });
    const { call } = await plugin.tool({ action: "get_status", callId });
    assert.ok(call.transcript.some((e: any) => e.speaker === "bot" && e.text === "Sure, noon works."));
    assert.equal(requests.length, 1);
    const [request] = requests;
    assert.equal(request.callId, callId);
    assert.equal(request.agentId, "main");
    assert.equal(request.sessionKey, "agent:main:voice:15551234567");
    assert.equal(request.prompt, "Can we meet at noon?");
    assert.match(request.extraSystemPrompt, /Conversation so far:\nYou: Calling about lunch\nCaller: Can we meet at noon\?/);
    assert.match(request.extraSystemPrompt, /\{"spoken":"\.\.\."\}/);
    assert.equal(request.timeoutMs, 30_000 - 250);
    assert.equal(call.state, "listening");

    reply = async () => {
      throw new Error("no model configured");
    };
    await registered.client.simulate({ action: "say", callId, text: "Hello?" });
    await tail.waitForWords(callId, "bot", APOLOGY);
    const apologised = await plugin.tool({ action: "get_status", callId });
    assert.ok(apologised.call.transcript.some((e: any) => e.speaker === "bot" && e.text === APOLOGY));
    reply = async () => [{ text: '{"spoken":""}' }];
    await plugin.tool({ action: "end_call", callId });
  });

  it("answers a consult with the call's agent, its session and the tool policy", async () => {
    requests.length = 0;
    reply = async () => [{ text: '{"spoken":"The order ships Tuesday."}' }];
    const { callId } = await plugin.tool({ action: "initiate_call", message: "About your order", mode: "conversation" });
    await waitAnswered(tail, plugin, callId);
    const answer = await registered.client.simulate({ action: "consult", callId, text: "When does it ship?" });
    assert.deepEqual(answer, { callId, text: "The order ships Tuesday." });
    const [request] = requests;
    assert.equal(request.agentId, "main");
    assert.equal(request.sessionKey, "agent:main:voice:15551234567");
    assert.equal(request.prompt, "When does it ship?");
    assert.deepEqual(request.toolsAllow, ["read", "web_search", "web_fetch", "x_search", "memory_search", "memory_get"]);
    assert.match(request.extraSystemPrompt, /consulting you/);
    assert.equal(request.timeoutMs, 60_000 - 250);

    reply = async () => {
      throw new RunCancelled("the operator stopped the run");
    };
    await assert.rejects(registered.client.simulate({ action: "consult", callId, text: "Still?" }), (err: any) => {
      assert.equal(err.code, "CANCELLED");
      assert.equal(err.description, "the operator stopped the run");
      return true;
    });
    reply = async () => [{ text: '{"spoken":""}' }];
    await plugin.tool({ action: "end_call", callId });
  });

  it("survives a daemon restart mid-session", async () => {
    tail.close();
    await daemon.stop();
    await poll("the responder to notice", () => !registered.responder!.connected);
    const down = await plugin.tool({ action: "get_status", callId: "x" });
    assert.match(down.error, /^voicecalld is not reachable at .*control\.sock .*`systemctl start voicecalld` or `make run`$/);
    await daemon.run();
    tail = await EventTail.open(daemon.socketPath);
    await registered.responder!.whenConnected();
    assert.ok(registered.responder!.connected);
    reply = async () => [{ text: "Back again." }];
    requests.length = 0;
    const { callId } = await plugin.tool({ action: "initiate_call", message: "After the restart", mode: "conversation" });
    await waitAnswered(tail, plugin, callId);
    await registered.client.simulate({ action: "say", callId, text: "Are you there?" });
    await tail.waitForWords(callId, "bot", "Back again.");
    const again = await plugin.tool({ action: "get_status", callId });
    assert.ok(again.call.transcript.some((e: any) => e.speaker === "bot" && e.text === "Back again."));
    assert.equal(requests.length, 1);
    await plugin.tool({ action: "end_call", callId });
  });
});

describe("socket path", () => {
  it("follows $VOICECALLD_SOCKET, then controlSocket, then the state folder", async () => {
    const { resolveSocketPath } = await import("../src/client.ts");
    const home = tempDir("home");
    assert.equal(resolveSocketPath({}, { HOME: home }), path.join(home, ".local/state/voicecalld/control.sock"));
    assert.equal(resolveSocketPath({}, { HOME: home, XDG_STATE_HOME: "/x" }), "/x/voicecalld/control.sock");
    assert.equal(resolveSocketPath({}, { VOICECALLD_STATE_DIR: "/s" }), "/s/control.sock");
    assert.equal(resolveSocketPath({ configured: "/c.sock" }, {}), "/c.sock");
    assert.equal(resolveSocketPath({ configured: "/c.sock" }, { VOICECALLD_SOCKET: "/e.sock" }), "/e.sock");
    assert.equal(resolveSocketPath({ explicit: "/x.sock", configured: "/c.sock" }, { VOICECALLD_SOCKET: "/e" }), "/x.sock");
    assert.equal(resolveSocketPath({ configured: "~/v.sock" }, { HOME: "/h" }), "/h/v.sock");
  });
});
