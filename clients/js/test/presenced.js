// Test harness: starts a real presenced (bin/presenced, or PRESENCED_BIN)
// on free loopback ports, waits for /readyz, and stops it by PID. Shared by
// the SDK tests (test/) and the browser tests (e2e/).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

const repo = fileURLToPath(new URL("../../..", import.meta.url));

/** The presenced binary: PRESENCED_BIN, or bin/presenced of this repo (make test builds it). */
export const presencedBin = process.env.PRESENCED_BIN || `${repo}bin/presenced`;

/** A free TCP port on 127.0.0.1 (closed again; the race is accepted in tests). */
export async function freePort() {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/**
 * Starts presenced with args (e.g. ["-insecure", "-tick", "50ms"]) on free
 * ports. The returned server can be stopped (SIGTERM: drain, or SIGKILL) and
 * started again on the same ports.
 */
export async function startPresenced(args = [], { readyTimeout = 20000 } = {}) {
  const port = await freePort();
  const adminPort = await freePort();
  const srv = {
    port,
    adminPort,
    args,
    origin: `http://127.0.0.1:${port}`,
    url: `ws://127.0.0.1:${port}/ws`,
    admin: `http://127.0.0.1:${adminPort}`,
    proc: null,
    log: "",
    async start() {
      const p = spawn(presencedBin, ["-addr", `127.0.0.1:${port}`, "-admin-addr", `127.0.0.1:${adminPort}`, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      this.proc = p;
      const keep = (d) => {
        this.log = (this.log + d).slice(-20000);
      };
      p.stdout.on("data", keep);
      p.stderr.on("data", keep);
      const exited = once(p, "exit");
      const deadline = Date.now() + readyTimeout;
      for (;;) {
        if (p.exitCode !== null) throw new Error(`presenced exited with ${p.exitCode}:\n${this.log}`);
        try {
          const r = await fetch(`${this.admin}/readyz`, { signal: AbortSignal.timeout(2000) });
          if (r.ok) break;
        } catch {
          // not listening yet
        }
        if (Date.now() > deadline) {
          p.kill("SIGKILL");
          await exited;
          throw new Error(`presenced not ready within ${readyTimeout} ms:\n${this.log}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      return this;
    },
    /** Stops the process: SIGTERM drains (bye, then 1001); SIGKILL cuts every connection. */
    async stop(signal = "SIGKILL") {
      const p = this.proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const exited = once(p, "exit");
      p.kill(signal);
      const t = setTimeout(() => p.kill("SIGKILL"), 15000);
      await exited;
      clearTimeout(t);
    },
    async restart(signal = "SIGKILL") {
      await this.stop(signal);
      return this.start();
    },
  };
  return srv.start();
}

/** An HS256 JWT for presenced's -jwt-secret, valid for ttl seconds (negative: expired). */
export function mintToken(secret, sub, ttl = 3600, extra = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, iat: now, exp: now + ttl, ...extra })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}
