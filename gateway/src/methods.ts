/**
 * The gateway RPC methods `voicecall.*`: upstream's parameters and payloads;
 * failures answer `respond(false, {error})` with the daemon's code in the text.
 */
import {
  CommandInputError,
  type Commands,
  callMode,
  createContinueOperations,
  errorText,
  str,
} from "./commands.ts";
import type { ShimConfig } from "./config.ts";

type Respond = (ok: boolean, payload?: unknown, error?: { code: string; message: string }) => void;
type Params = Record<string, unknown> | undefined;
type Handler = (options: { params: Params; respond: Respond }) => Promise<void>;

/** What registerGatewayMethod needs from the plugin api. */
export type MethodRegistrar = (
  method: string,
  handler: Handler,
  options?: { scope?: "operator.read" | "operator.write" },
) => void;

const WRITE = { scope: "operator.write" as const };
const READ = { scope: "operator.read" as const };

/** Register every `voicecall.*` method. */
export function registerVoiceCallMethods(
  register: MethodRegistrar,
  commands: Commands,
  config: ShimConfig,
): string[] {
  const continues = createContinueOperations(commands, config);
  const names: string[] = [];
  const method = (
    name: string,
    run: (params: Params) => Promise<unknown> | unknown,
    scope: typeof WRITE | typeof READ,
  ) => {
    names.push(name);
    register(
      name,
      async ({ params, respond }) => {
        try {
          respond(true, await run(params ?? {}));
        } catch (err) {
          // Upstream's {error} payload, and the gateway's error shape so that
          // `openclaw gateway call` shows the message too.
          const text = errorText(err);
          const code = err instanceof CommandInputError ? "INVALID_REQUEST" : "UNAVAILABLE";
          respond(false, { error: text }, { code, message: text });
        }
      },
      scope,
    );
  };

  method(
    "voicecall.initiate",
    (p) => {
      const message = str(p?.message);
      if (!message) {
        throw new CommandInputError("message required");
      }
      return commands.initiate({
        to: str(p?.to),
        message,
        mode: callMode(p?.mode),
        sessionKey: str(p?.sessionKey),
      });
    },
    WRITE,
  );
  method(
    "voicecall.start",
    (p) => {
      const to = str(p?.to);
      if (!to) {
        throw new CommandInputError("to required");
      }
      return commands.initiate({
        to,
        message: str(p?.message),
        mode: callMode(p?.mode),
        sessionKey: str(p?.sessionKey),
        dtmfSequence: str(p?.dtmfSequence),
      });
    },
    WRITE,
  );
  method("voicecall.continue", (p) => commands.continueCall(str(p?.callId), str(p?.message)), WRITE);
  method("voicecall.continue.start", (p) => continues.start(str(p?.callId), str(p?.message)), WRITE);
  method("voicecall.continue.result", (p) => continues.result(str(p?.operationId)), READ);
  method("voicecall.speak", (p) => commands.speak(str(p?.callId), str(p?.message)), WRITE);
  method("voicecall.dtmf", (p) => commands.sendDtmf(str(p?.callId), str(p?.digits)), WRITE);
  method(
    "voicecall.transfer",
    (p) => commands.transferCall(str(p?.callId), str(p?.to), str(p?.message)),
    WRITE,
  );
  method("voicecall.end", (p) => commands.endCall(str(p?.callId)), WRITE);
  method("voicecall.status", (p) => commands.status(str(p?.callId) ?? str(p?.sid)), READ);
  return names;
}
