/**
 * The AMP module against byte sequences captured from Twisted's own AMP (and
 * the examples in docs/control-protocol.md), both ways, and against a paired
 * in-memory peer for correlation, errors, timeouts and chunked JSON.
 */
import assert from "node:assert/strict";
import { PassThrough, Duplex } from "node:stream";
import { describe, it } from "node:test";

import {
  AmpConnection,
  AmpError,
  BoxDecoder,
  ConnectionLost,
  MAX_VALUE,
  codec,
  decodeJson,
  encodeBox,
  encodeJson,
} from "../src/amp.ts";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

// Captured from Twisted 24 (amp.AmpBox(...).serialize(); Twisted sorts keys).
const TWISTED = {
  statusRequest: hex("00045f61736b00013100085f636f6d6d616e6400065374617475730000"),
  statusAnswer: hex("00075f616e73776572000131000563616c6c7300025b5d0000"),
  initiateRequest: hex(
    "00045f61736b00013700085f636f6d6d616e640008496e69746961746500076d657373616765000f4772c3bcc39f" +
      "206469636820e2988e00046d6f646500066e6f746966790002746f000c2b31353535313233343536370000",
  ),
  speakAnswer: hex(
    "00075f616e737765720001330008636f6d706c657465000546616c73650006706c61796564000868692074686572650000",
  ),
  error: hex(
    "00065f6572726f72000132000b5f6572726f725f636f6465000c554e4b4e4f574e5f43414c4c00125f6572726f725f" +
      "6465736372697074696f6e00144e6f2063616c6c2077697468206964206e6f70650000",
  ),
};

// The example in docs/control-protocol.md (keys in the order shown there).
const DOC_STATUS_REQUEST = hex(`
  00 08 5f 63 6f 6d 6d 61 6e 64 00 06 53 74 61 74 75 73
  00 04 5f 61 73 6b 00 01 31
  00 00`);

function decodeOne(bytes: Buffer) {
  const boxes = new BoxDecoder().push(bytes);
  assert.equal(boxes.length, 1);
  return boxes[0];
}

describe("box framing", () => {
  it("encodes the protocol doc's Status request byte for byte", () => {
    assert.deepEqual(encodeBox([["_command", "Status"], ["_ask", "1"]]), DOC_STATUS_REQUEST);
  });

  it("encodes boxes exactly as Twisted does (same key order)", () => {
    assert.deepEqual(encodeBox([["_ask", "1"], ["_command", "Status"]]), TWISTED.statusRequest);
    assert.deepEqual(
      encodeBox([
        ["_ask", "7"],
        ["_command", "Initiate"],
        ["message", "Grüß dich ☎"],
        ["mode", "notify"],
        ["to", "+15551234567"],
      ]),
      TWISTED.initiateRequest,
    );
    assert.deepEqual(
      encodeBox([
        ["_answer", "3"],
        ["complete", codec.boolean(false)],
        ["played", "hi there"],
      ]),
      TWISTED.speakAnswer,
    );
  });

  it("decodes Twisted's boxes", () => {
    const answer = decodeOne(TWISTED.statusAnswer);
    assert.equal(answer.get("_answer")!.toString(), "1");
    assert.deepEqual(decodeJson(answer, "calls"), []);
    const request = decodeOne(TWISTED.initiateRequest);
    assert.equal(codec.readText(request.get("message")!), "Grüß dich ☎");
    const speak = decodeOne(TWISTED.speakAnswer);
    assert.equal(codec.readBoolean(speak.get("complete")!), false);
    const error = decodeOne(TWISTED.error);
    assert.equal(error.get("_error_code")!.toString(), "UNKNOWN_CALL");
    assert.equal(error.get("_error_description")!.toString(), "No call with id nope");
  });

  it("reassembles boxes split at every byte, and several boxes in one chunk", () => {
    const both = Buffer.concat([TWISTED.initiateRequest, TWISTED.error]);
    const decoder = new BoxDecoder();
    const boxes = [];
    for (let i = 0; i < both.length; i += 1) {
      boxes.push(...decoder.push(both.subarray(i, i + 1)));
    }
    assert.equal(boxes.length, 2);
    assert.equal(boxes[1].get("_error")!.toString(), "2");
    assert.equal(new BoxDecoder().push(both).length, 2);
  });

  it("keeps empty values and refuses oversized keys and values", () => {
    const box = decodeOne(encodeBox([["text", ""]]));
    assert.equal(box.get("text")!.length, 0);
    assert.throws(() => encodeBox([["k".repeat(256), "v"]]), RangeError);
    assert.throws(() => encodeBox([["", "v"]]), RangeError);
    assert.throws(() => encodeBox([["v", Buffer.alloc(MAX_VALUE + 1)]]), RangeError);
    assert.doesNotThrow(() => encodeBox([["v", Buffer.alloc(MAX_VALUE)]]));
  });

  it("reads and writes AMP integers and booleans", () => {
    assert.equal(codec.integer(42).toString(), "42");
    assert.equal(codec.readInteger(Buffer.from("-7")), -7);
    assert.throws(() => codec.readInteger(Buffer.from("4.5")), AmpError);
    assert.equal(codec.boolean(true).toString(), "True");
    assert.throws(() => codec.readBoolean(Buffer.from("true")), AmpError);
  });
});

describe("JSON values", () => {
  it("splits long JSON across name, name.1, ... like the daemon (65,535-byte parts)", () => {
    // Twisted's JSON argument splits this list into [65535, 61356] bytes under calls, calls.1.
    const big = Array.from({ length: 1000 }, (_, i) => ({ callId: String(i), text: "x".repeat(100) }));
    const pairs = encodeJson("calls", big);
    assert.deepEqual(
      pairs.map(([key, value]) => [key, value.length]),
      [
        ["calls", 65535],
        ["calls.1", 61356],
      ],
    );
    const box = decodeOne(encodeBox(pairs));
    assert.deepEqual(decodeJson(box, "calls"), big);
  });

  it("joins multi-byte characters split across parts", () => {
    const text = "☎".repeat(50_000); // 150,000 bytes: parts cut through characters
    const box = decodeOne(encodeBox(encodeJson("t", text)));
    assert.equal(decodeJson(box, "t"), text);
    assert.equal(decodeJson(box, "absent"), undefined);
  });
});

/** Two AmpConnections joined back to back in memory. */
function pair(): [AmpConnection, AmpConnection, () => void] {
  const aToB = new PassThrough();
  const bToA = new PassThrough();
  const a = Duplex.from({ readable: bToA, writable: aToB });
  const b = Duplex.from({ readable: aToB, writable: bToA });
  const hangUp = () => {
    a.destroy();
    b.destroy();
  };
  return [new AmpConnection(a), new AmpConnection(b), hangUp];
}

describe("AmpConnection", () => {
  it("matches answers to asks, whatever order they come back in", async () => {
    const [client, server] = pair();
    server.respond("Echo", async (box) => {
      const wait = Number(box.get("wait")!.toString());
      await new Promise((resolve) => setTimeout(resolve, wait));
      return { said: box.get("say")! };
    });
    const slow = client.call("Echo", { say: "slow", wait: "40" });
    const fast = client.call("Echo", { say: "fast", wait: "0" });
    assert.equal((await fast).get("said")!.toString(), "fast");
    assert.equal((await slow).get("said")!.toString(), "slow");
  });

  it("turns _error into AmpError with the code and description", async () => {
    const [client, server] = pair();
    server.respond("End", () => {
      throw new AmpError("UNKNOWN_CALL", "No call with id nope");
    });
    await assert.rejects(client.call("End", { callId: "nope" }), (err: unknown) => {
      assert.ok(err instanceof AmpError);
      assert.equal(err.code, "UNKNOWN_CALL");
      assert.equal(err.message, "UNKNOWN_CALL: No call with id nope");
      return true;
    });
  });

  it("answers unknown commands with UNHANDLED", async () => {
    const [client] = pair();
    await assert.rejects(client.call("Nope"), (err: unknown) => err instanceof AmpError && err.code === "UNHANDLED");
  });

  it("times a call out and ignores its late answer", async () => {
    const [client, server] = pair();
    let release!: () => void;
    server.respond("Slow", () => new Promise<void>((resolve) => (release = resolve)));
    await assert.rejects(
      client.call("Slow", [], { timeoutMs: 30 }),
      (err: unknown) => err instanceof AmpError && err.code === "TIMEOUT",
    );
    release();
    const ok = await client.call("Slow2", [], { timeoutMs: 200 }).catch((e: AmpError) => e.code);
    assert.equal(ok, "UNHANDLED");
  });

  it("fails pending calls with ConnectionLost when the peer goes away", async () => {
    const [client, server, hangUp] = pair();
    server.respond("Forever", () => new Promise(() => {}));
    const pending = client.call("Forever");
    const closed = new Promise((resolve) => client.onClose(resolve));
    hangUp();
    await assert.rejects(pending, ConnectionLost);
    await closed;
    assert.equal(client.open, false);
    await assert.rejects(client.call("Again"), ConnectionLost);
  });

  it("serves commands sent without _ask and sends no answer", async () => {
    const [client, server] = pair();
    const seen: string[] = [];
    server.respond("Event", (box) => {
      seen.push(String(decodeJson(box, "event")));
    });
    await client.call("Event", encodeJson("event", "hello"), { requiresAnswer: false });
    await client.call("Event", encodeJson("event", "again"), { requiresAnswer: false });
    server.respond("Sync", () => ({}));
    await client.call("Sync");
    assert.deepEqual(seen, ["hello", "again"]);
  });
});
