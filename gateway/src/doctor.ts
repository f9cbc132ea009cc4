/**
 * `openclaw voicecall setup|smoke`: run the `voicecall doctor` binary (its
 * checks run where the daemon's config and state are) and hand back its
 * JSON report and exit status.
 */
import { spawn } from "node:child_process";

export type DoctorRun = { code: number; stdout: string; stderr: string };
export type DoctorRunner = (args: string[]) => Promise<DoctorRun>;

/** The binary: `$VOICECALL_BIN`, else `voicecall` on the PATH (the daemon's venv). */
export function voicecallBinary(env: NodeJS.ProcessEnv): string {
  return env.VOICECALL_BIN?.trim() || "voicecall";
}

/** A runner that spawns `binary` with `env`; a missing binary is exit 127 with a hint. */
export function spawnDoctor(binary: string, env: NodeJS.ProcessEnv): DoctorRunner {
  return (args) =>
    new Promise((resolve) => {
      const child = spawn(binary, args, { env, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")));
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")));
      child.on("error", (err) =>
        resolve({ code: 127, stdout: "", stderr: `cannot run ${binary} (set VOICECALL_BIN): ${err.message}` }),
      );
      child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
    });
}
