/**
 * Twisted's AMP (Asynchronous Messaging Protocol), as voicecalld's control
 * socket speaks it: box framing, value codecs, and one connection object that
 * correlates `_ask`/`_answer`/`_error` and serves commands the peer sends.
 *
 * docs/control-protocol.md in the voicecalld repository is the reference.
 */
import type { Duplex } from "node:stream";

/** The largest AMP value (2-byte length prefix). */
export const MAX_VALUE = 0xffff;
/** The largest AMP key. */
export const MAX_KEY = 0xff;

/** One AMP box: keys and their raw values, in wire order. */
export type Box = Map<string, Buffer>;
/** Values as callers give them: text is sent as UTF-8. */
export type BoxInput = Iterable<readonly [string, Buffer | string]> | Record<string, Buffer | string>;

/** A failure the peer reported (`_error`), or one raised locally with an AMP-style code. */
export class AmpError extends Error {
  readonly code: string;
  readonly description: string;

  constructor(code: string, description: string) {
    super(`${code}: ${description}`);
    this.name = "AmpError";
    this.code = code;
    this.description = description;
  }
}

/** The connection closed before the answer came. */
export class ConnectionLost extends Error {
  constructor(message = "the connection to voicecalld closed") {
    super(message);
    this.name = "ConnectionLost";
  }
}

function entries(input: BoxInput): Array<readonly [string, Buffer | string]> {
  if (Symbol.iterator in input) {
    return [...(input as Iterable<readonly [string, Buffer | string]>)];
  }
  return Object.entries(input);
}

/** Serialize one box: each key and value with a 2-byte big-endian length, then an empty key. */
export function encodeBox(input: BoxInput): Buffer {
  const parts: Buffer[] = [];
  for (const [key, raw] of entries(input)) {
    const keyBytes = Buffer.from(key, "ascii");
    if (keyBytes.length === 0 || keyBytes.length > MAX_KEY) {
      throw new RangeError(`AMP key ${JSON.stringify(key)} must be 1-255 bytes`);
    }
    const value = typeof raw === "string" ? Buffer.from(raw, "utf8") : raw;
    if (value.length > MAX_VALUE) {
      throw new RangeError(`AMP value for ${key} is ${value.length} bytes (at most ${MAX_VALUE})`);
    }
    const head = Buffer.alloc(2);
    head.writeUInt16BE(keyBytes.length);
    const size = Buffer.alloc(2);
    size.writeUInt16BE(value.length);
    parts.push(head, keyBytes, size, value);
  }
  parts.push(Buffer.alloc(2));
  return Buffer.concat(parts);
}

/** Incremental box parser: feed it bytes as they arrive, get whole boxes back. */
export class BoxDecoder {
  private pending: Buffer = Buffer.alloc(0);
  private box: Box = new Map();
  private key: string | null = null;

  /** Add bytes; returns every box they complete. */
  push(chunk: Buffer): Box[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const done: Box[] = [];
    let offset = 0;
    while (this.pending.length - offset >= 2) {
      const size = this.pending.readUInt16BE(offset);
      if (this.key === null && size === 0) {
        done.push(this.box);
        this.box = new Map();
        offset += 2;
        continue;
      }
      if (this.pending.length - offset - 2 < size) {
        break;
      }
      const bytes = this.pending.subarray(offset + 2, offset + 2 + size);
      offset += 2 + size;
      if (this.key === null) {
        if (size > MAX_KEY) {
          throw new AmpError("PROTOCOL", `AMP key of ${size} bytes (at most ${MAX_KEY})`);
        }
        this.key = bytes.toString("ascii");
      } else {
        this.box.set(this.key, Buffer.from(bytes));
        this.key = null;
      }
    }
    this.pending = this.pending.subarray(offset);
    return done;
  }
}

/** AMP's value types, both ways. */
export const codec = {
  text: (value: string): Buffer => Buffer.from(value, "utf8"),
  integer: (value: number): Buffer => {
    if (!Number.isInteger(value)) {
      throw new RangeError(`not an integer: ${value}`);
    }
    return Buffer.from(String(value), "ascii");
  },
  boolean: (value: boolean): Buffer => Buffer.from(value ? "True" : "False", "ascii"),
  readText: (value: Buffer): string => value.toString("utf8"),
  readInteger: (value: Buffer): number => {
    const text = value.toString("ascii");
    if (!/^-?\d+$/.test(text)) {
      throw new AmpError("PROTOCOL", `not an AMP integer: ${JSON.stringify(text)}`);
    }
    return Number(text);
  },
  readBoolean: (value: Buffer): boolean => {
    const text = value.toString("ascii");
    if (text !== "True" && text !== "False") {
      throw new AmpError("PROTOCOL", `not an AMP boolean: ${JSON.stringify(text)}`);
    }
    return text === "True";
  },
};

/**
 * A JSON value as AMP key/value pairs: the UTF-8 text, split every 65,535
 * bytes across `name`, `name.1`, `name.2`, ...
 */
export function encodeJson(name: string, value: unknown): Array<[string, Buffer]> {
  const data = Buffer.from(JSON.stringify(value), "utf8");
  const pairs: Array<[string, Buffer]> = [[name, data.subarray(0, MAX_VALUE)]];
  for (let start = MAX_VALUE, index = 1; start < data.length; start += MAX_VALUE, index += 1) {
    pairs.push([`${name}.${index}`, data.subarray(start, start + MAX_VALUE)]);
  }
  return pairs;
}

/** Join `name`, `name.1`, ... of a box and parse the JSON (undefined when `name` is absent). */
export function decodeJson(box: Box, name: string): unknown {
  const first = box.get(name);
  if (first === undefined) {
    return undefined;
  }
  const parts = [first];
  for (let index = 1; box.has(`${name}.${index}`); index += 1) {
    parts.push(box.get(`${name}.${index}`)!);
  }
  return JSON.parse(Buffer.concat(parts).toString("utf8"));
}

/** Serves one command the peer sends; returns the answer's values (or nothing). */
export type Responder = (args: Box) => Promise<BoxInput | void> | BoxInput | void;

export type CallOptions = {
  /** Give up (TIMEOUT) after this many milliseconds; 0 or absent waits as long as it takes. */
  timeoutMs?: number;
  /** Send without `_ask`: the peer answers nothing. */
  requiresAnswer?: boolean;
};

type Pending = {
  resolve: (box: Box) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
};

/**
 * One AMP conversation over a stream (a UNIX socket here): sends commands and
 * matches their answers, and runs the registered responders for commands the
 * peer sends, answering them with `_answer` or `_error`.
 */
export class AmpConnection {
  private readonly stream: Duplex;
  private readonly decoder = new BoxDecoder();
  private readonly pending = new Map<string, Pending>();
  private readonly responders = new Map<string, Responder>();
  private nextAsk = 1;
  private closedWith: Error | null = null;
  private readonly closeListeners: Array<(reason: Error) => void> = [];

  constructor(stream: Duplex) {
    this.stream = stream;
    stream.on("data", (chunk: Buffer) => this.dataReceived(chunk));
    stream.on("error", (err: Error) => this.lost(err));
    stream.on("close", () => this.lost(new ConnectionLost()));
  }

  /** Whether the connection is still open. */
  get open(): boolean {
    return this.closedWith === null;
  }

  /** Serve command `name` from the peer with `responder`. */
  respond(name: string, responder: Responder): void {
    this.responders.set(name, responder);
  }

  /** Call `listener` once when the connection closes (at once if it already has). */
  onClose(listener: (reason: Error) => void): void {
    if (this.closedWith !== null) {
      listener(this.closedWith);
      return;
    }
    this.closeListeners.push(listener);
  }

  /** Send command `name` with `args`; resolves with the answer box, rejects with AmpError. */
  call(name: string, args: BoxInput = [], options: CallOptions = {}): Promise<Box> {
    if (this.closedWith !== null) {
      return Promise.reject(this.closedWith);
    }
    const wantAnswer = options.requiresAnswer ?? true;
    const ask = wantAnswer ? String(this.nextAsk++) : null;
    const box: Array<readonly [string, Buffer | string]> = [["_command", name]];
    if (ask !== null) {
      box.push(["_ask", ask]);
    }
    box.push(...entries(args));
    let bytes: Buffer;
    try {
      bytes = encodeBox(box);
    } catch (err) {
      return Promise.reject(err);
    }
    if (ask === null) {
      this.stream.write(bytes);
      return Promise.resolve(new Map());
    }
    return new Promise<Box>((resolve, reject) => {
      const entry: Pending = { resolve, reject };
      if (options.timeoutMs && options.timeoutMs > 0) {
        const seconds = Math.round(options.timeoutMs / 100) / 10;
        entry.timer = setTimeout(() => {
          this.pending.delete(ask);
          reject(new AmpError("TIMEOUT", `no answer from voicecalld to ${name} within ${seconds} s`));
        }, options.timeoutMs);
      }
      this.pending.set(ask, entry);
      this.stream.write(bytes);
    });
  }

  /** Close the connection; pending calls fail with ConnectionLost. */
  close(): void {
    this.lost(new ConnectionLost("the connection to voicecalld was closed by the shim"));
    this.stream.destroy();
  }

  private dataReceived(chunk: Buffer): void {
    let boxes: Box[];
    try {
      boxes = this.decoder.push(chunk);
    } catch (err) {
      this.lost(err as Error);
      this.stream.destroy();
      return;
    }
    for (const box of boxes) {
      this.boxReceived(box);
    }
  }

  private boxReceived(box: Box): void {
    const answer = box.get("_answer");
    if (answer !== undefined) {
      this.settle(answer.toString("ascii"), (p) => p.resolve(box));
      return;
    }
    const error = box.get("_error");
    if (error !== undefined) {
      const code = box.get("_error_code")?.toString("ascii") ?? "UNKNOWN";
      const description = box.get("_error_description")?.toString("utf8") ?? "";
      this.settle(error.toString("ascii"), (p) => p.reject(new AmpError(code, description)));
      return;
    }
    const command = box.get("_command");
    if (command !== undefined) {
      void this.serve(command.toString("ascii"), box);
    }
  }

  private settle(ask: string, action: (p: Pending) => void): void {
    const entry = this.pending.get(ask);
    if (entry === undefined) {
      return; // Timed out already: a late answer is dropped.
    }
    this.pending.delete(ask);
    if (entry.timer !== undefined) {
      clearTimeout(entry.timer);
    }
    action(entry);
  }

  private async serve(name: string, box: Box): Promise<void> {
    const ask = box.get("_ask");
    const responder = this.responders.get(name);
    let reply: Array<readonly [string, Buffer | string]>;
    try {
      if (responder === undefined) {
        throw new AmpError("UNHANDLED", `Unhandled Command: ${JSON.stringify(name)}`);
      }
      const values = (await responder(box)) ?? [];
      if (ask === undefined) {
        return;
      }
      reply = [["_answer", ask], ...entries(values)];
    } catch (err) {
      if (ask === undefined) {
        return;
      }
      const code = err instanceof AmpError ? err.code : "UNKNOWN";
      const description = err instanceof AmpError ? err.description : String(err);
      reply = [
        ["_error", ask],
        ["_error_code", code],
        ["_error_description", description],
      ];
    }
    if (this.closedWith === null) {
      this.stream.write(encodeBox(reply));
    }
  }

  private lost(reason: Error): void {
    if (this.closedWith !== null) {
      return;
    }
    this.closedWith = reason instanceof ConnectionLost ? reason : new ConnectionLost(reason.message);
    for (const [ask, entry] of this.pending) {
      this.pending.delete(ask);
      if (entry.timer !== undefined) {
        clearTimeout(entry.timer);
      }
      entry.reject(this.closedWith);
    }
    for (const listener of this.closeListeners.splice(0)) {
      listener(this.closedWith);
    }
  }
}
