/**
 * What to say on the phone from an agent run's output, by upstream's rules:
 * reasoning and error payloads are skipped; a `{"spoken": "..."}` object (bare,
 * fenced, embedded, or just its `"spoken": "..."` pair) gives the words, and an
 * empty `spoken` means say nothing; anything else is read as plain text with
 * code fences and leading meta paragraphs dropped.  Whitespace is collapsed
 * and the payloads' words are joined by spaces.
 */

export type RunPayload = {
  text?: string;
  isError?: boolean;
  isReasoning?: boolean;
};

/** The words to speak, or "" for nothing. */
export function spokenText(payloads: readonly RunPayload[] | undefined): string {
  const segments: string[] = [];
  for (const payload of payloads ?? []) {
    if (payload.isError || payload.isReasoning || typeof payload.text !== "string") {
      continue;
    }
    const words = spokenFromText(payload.text);
    if (words) {
      segments.push(words);
    }
  }
  return collapse(segments.join(" "));
}

/** The words of one payload's text ("" when it asks for silence or holds nothing). */
export function spokenFromText(raw: string): string {
  const text = raw.trim();
  if (!text) {
    return "";
  }
  const structured = fromJsonForms(text);
  if (structured !== null) {
    return collapse(structured);
  }
  return collapse(plain(text));
}

function spokenField(value: unknown): string | null {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const spoken = (value as Record<string, unknown>).spoken;
    if (typeof spoken === "string") {
      return spoken;
    }
  }
  return null;
}

function parse(candidate: string): string | null {
  try {
    return spokenField(JSON.parse(candidate));
  } catch {
    return null;
  }
}

function fromJsonForms(text: string): string | null {
  const whole = parse(text);
  if (whole !== null) {
    return whole;
  }
  for (const match of text.matchAll(/```[a-zA-Z0-9_-]*\s*\n?([\s\S]*?)```/g)) {
    const fenced = parse(match[1].trim());
    if (fenced !== null) {
      return fenced;
    }
  }
  const open = text.indexOf("{");
  const close = text.lastIndexOf("}");
  if (open !== -1 && close > open) {
    const outer = parse(text.slice(open, close + 1));
    if (outer !== null) {
      return outer;
    }
  }
  const inline = /"spoken"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(text);
  if (inline !== null) {
    try {
      return JSON.parse(`"${inline[1]}"`) as string;
    } catch {
      return inline[1];
    }
  }
  return null;
}

const META = [
  /^thinking process\b/i,
  /^(reasoning|analysis)\s*:/i,
  /^the user\b[\s\S]*\bI should\b/i,
];

function plain(text: string): string {
  const unfenced = text.replace(/^\s*```[a-zA-Z0-9_-]*\s*$/gm, "");
  const paragraphs = unfenced.split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean);
  while (paragraphs.length > 1 && META.some((pattern) => pattern.test(paragraphs[0]))) {
    paragraphs.shift();
  }
  if (paragraphs.length === 1 && META.some((pattern) => pattern.test(paragraphs[0]))) {
    return "";
  }
  return paragraphs.join(" ");
}

function collapse(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

/** The instruction that asks the model for upstream's spoken-output shape. */
export const SPOKEN_OUTPUT_CONTRACT =
  'Answer with exactly one JSON object of the form {"spoken":"..."} holding only the words ' +
  'to say aloud on the phone: no markdown, no lists, no stage directions. Use {"spoken":""} ' +
  "to say nothing.";
