/** Upstream's reply-extraction rules, the session keys and the system prompt. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { spokenFromText, spokenText } from "../src/reply-text.ts";
import { sessionKeyFor, splitModel, systemPrompt } from "../src/responder.ts";

describe("spoken text", () => {
  it("takes the spoken field from JSON, fenced JSON, embedded JSON and inline pairs", () => {
    assert.equal(spokenFromText('{"spoken":"Hello there."}'), "Hello there.");
    assert.equal(spokenFromText('```json\n{"spoken": "Fenced."}\n```'), "Fenced.");
    assert.equal(spokenFromText('Sure: {"spoken": "Embedded.", "mood": "calm"} done'), "Embedded.");
    assert.equal(spokenFromText('oops "spoken": "Inline \\"quoted\\"." trailing'), 'Inline "quoted".');
    assert.equal(spokenFromText('{"spoken":""}'), "");
  });

  it("reads plain text without code fences and leading meta paragraphs", () => {
    assert.equal(spokenFromText("Thinking process: the caller wants lunch.\n\nNoon works."), "Noon works.");
    assert.equal(spokenFromText("Reasoning: short.\n\nAnalysis: shorter.\n\nSee you   then."), "See you then.");
    assert.equal(spokenFromText("The user asks about time, so I should answer.\n\nIt is ten."), "It is ten.");
    assert.equal(spokenFromText("```\nplain words\n```"), "plain words");
    assert.equal(spokenFromText("  Just\n  this.  "), "Just this.");
  });

  it("skips reasoning and error payloads and joins the rest", () => {
    assert.equal(
      spokenText([
        { text: "secret plan", isReasoning: true },
        { text: "boom", isError: true },
        { text: '{"spoken":"One."}' },
        { text: "Two." },
        { text: '{"spoken":""}' },
        {},
      ]),
      "One. Two.",
    );
    assert.equal(spokenText(undefined), "");
  });
});

describe("sessions and prompts", () => {
  const call = {
    callId: "c1",
    direction: "outbound" as const,
    from: "+15550000000",
    to: "+1 (555) 123-4567",
    transcript: [
      { speaker: "bot" as const, text: "Hi, calling about lunch." },
      { speaker: "user" as const, text: "1#", kind: "dtmf" },
      { speaker: "user" as const, text: "Noon?" },
    ],
  };

  it("keys sessions as sessionScope says, by the other party's number", () => {
    assert.equal(sessionKeyFor(call, "main", "per-phone"), "agent:main:voice:15551234567");
    assert.equal(sessionKeyFor({ ...call, direction: "inbound", from: "+4930123" }, "ops", "per-phone"), "agent:ops:voice:4930123");
    assert.equal(sessionKeyFor(call, "main", "per-call"), "agent:main:voice:call:c1");
    assert.equal(sessionKeyFor(call, "main", "main"), "agent:main:main");
    assert.equal(sessionKeyFor({ ...call, sessionKey: "agent:main:chat:7" }, "main", "per-phone"), "agent:main:chat:7");
    assert.equal(sessionKeyFor({ ...call, sessionKey: "agent:other:x" }, "main", "per-phone"), "agent:main:voice:session:agent:other:x");
  });

  it("splits provider/model", () => {
    assert.deepEqual(splitModel("openai/gpt-4o-mini"), { provider: "openai", model: "gpt-4o-mini" });
    assert.deepEqual(splitModel("gpt-4o-mini"), { model: "gpt-4o-mini" });
    assert.deepEqual(splitModel(undefined), {});
  });

  it("puts the persona, the purpose, the conversation and the output contract in the system prompt", () => {
    const prompt = systemPrompt(call, undefined, "Ada");
    assert.match(prompt, /^You are Ada, a helpful voice assistant on a phone call\./);
    assert.match(prompt, /its purpose, as you opened it: Hi, calling about lunch\./);
    assert.match(prompt, /Conversation so far:\nYou: Hi, calling about lunch\.\nCaller \(keypad\): 1#\nCaller: Noon\?/);
    assert.match(prompt, /\{"spoken":"\.\.\."\}/);
    assert.match(systemPrompt(call, "Be terse.", "Ada"), /^Be terse\./);
  });
});
