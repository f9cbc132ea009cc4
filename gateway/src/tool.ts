/**
 * The agent tool `voice_call`: upstream's actions (and its legacy
 * `{mode: call|status}` form), answered by the daemon.  Results are JSON as
 * text (2-space indent) plus `details`; errors are returned as `{error}`.
 */
import { type Commands, callMode, errorText, str } from "./commands.ts";

const callId = { type: "string", description: "Call ID" };

/** The tool's parameters: one object per action, plus the legacy form. */
export const VOICE_CALL_PARAMETERS = {
  anyOf: [
    {
      type: "object",
      properties: {
        action: { const: "initiate_call", type: "string" },
        to: { type: "string", description: "Call target" },
        message: { type: "string", description: "Intro message" },
        mode: { type: "string", enum: ["notify", "conversation"] },
        sessionKey: { type: "string", description: "Agent session for the call's replies" },
        dtmfSequence: { type: "string", description: "Digits to send once connected" },
      },
      required: ["action", "message"],
    },
    {
      type: "object",
      properties: {
        action: { const: "continue_call", type: "string" },
        callId,
        message: { type: "string", description: "Follow-up message" },
      },
      required: ["action", "callId", "message"],
    },
    {
      type: "object",
      properties: {
        action: { const: "speak_to_user", type: "string" },
        callId,
        message: { type: "string", description: "Message to speak" },
      },
      required: ["action", "callId", "message"],
    },
    {
      type: "object",
      properties: {
        action: { const: "send_dtmf", type: "string" },
        callId,
        digits: { type: "string", description: "DTMF digits (0-9 * # A-D, w = wait)" },
      },
      required: ["action", "callId", "digits"],
    },
    {
      type: "object",
      properties: {
        action: { const: "transfer_call", type: "string" },
        callId,
        to: { type: "string", description: "E.164 number of the person to hand the call to" },
        message: { type: "string", description: "Said to the caller before the transfer" },
      },
      required: ["action", "callId", "to"],
    },
    {
      type: "object",
      properties: { action: { const: "end_call", type: "string" }, callId },
      required: ["action", "callId"],
    },
    {
      type: "object",
      properties: { action: { const: "get_status", type: "string" }, callId },
      required: ["action", "callId"],
    },
    {
      type: "object",
      properties: {
        mode: { type: "string", enum: ["call", "status"] },
        to: { type: "string", description: "Call target" },
        sid: { type: "string", description: "Call SID" },
        message: { type: "string", description: "Optional intro message" },
      },
    },
  ],
} as const;

/** A tool result: the payload as pretty JSON text and as details. */
export function jsonResult(payload: unknown) {
  return {
    content: [{ type: "text" as const, text: JSON.stringify(payload, null, 2) }],
    details: payload,
  };
}

/** Run one `voice_call` invocation. */
export async function runVoiceCallTool(commands: Commands, raw: unknown) {
  const params = (raw && typeof raw === "object" ? raw : {}) as Record<string, unknown>;
  try {
    switch (params.action) {
      case "initiate_call": {
        const message = str(params.message);
        if (!message) {
          throw new Error("message required");
        }
        return jsonResult(
          await commands.initiate({
            to: str(params.to),
            message,
            mode: callMode(params.mode),
            sessionKey: str(params.sessionKey),
            dtmfSequence: str(params.dtmfSequence),
          }),
        );
      }
      case "continue_call":
        return jsonResult(await commands.continueCall(str(params.callId), str(params.message)));
      case "speak_to_user":
        return jsonResult(await commands.speak(str(params.callId), str(params.message)));
      case "send_dtmf":
        return jsonResult(await commands.sendDtmf(str(params.callId), str(params.digits)));
      case "transfer_call":
        return jsonResult(
          await commands.transferCall(str(params.callId), str(params.to), str(params.message)),
        );
      case "end_call":
        return jsonResult(await commands.endCall(str(params.callId)));
      case "get_status": {
        const id = str(params.callId);
        if (!id) {
          throw new Error("callId required");
        }
        return jsonResult(await commands.status(id));
      }
    }
    const mode = params.mode ?? "call";
    if (mode === "status") {
      const sid = str(params.sid);
      if (!sid) {
        throw new Error("sid required for status");
      }
      return jsonResult(await commands.status(sid));
    }
    return jsonResult(
      await commands.initiate({ to: str(params.to), message: str(params.message) }, "to required for call"),
    );
  } catch (err) {
    return jsonResult({ error: errorText(err) });
  }
}
