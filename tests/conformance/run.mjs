// Runs the MCP conformance suite against signoff's /mcp, as .ci/run does:
//   node run.mjs path/to/signoff
// It starts `signoff serve` on a fresh SQLite database with an API token, and a small
// forwarder that adds the token to every request (the suite cannot send credentials;
// everything else, Host and Origin included, goes through as the suite sent it). Then
// it runs the suite for each spec version against the forwarder, with the failures
// expected-failures.yml explains, and exits non-zero if anything else fails.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const signoff = path.resolve(process.argv[2] ?? "target/debug/signoff");
const versions = ["2025-11-25", "2026-07-28"];

const freePort = () =>
  new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

const dir = mkdtempSync(path.join(tmpdir(), "signoff-conformance-"));
const env = { ...process.env, DATABASE_URL: `sqlite://${dir}/signoff.db`, RUST_LOG: "warn" };
const token = execFileSync(signoff, ["token", "create", "conformance"], { env }).toString().trim();
const port = await freePort();
const server = spawn(signoff, ["serve", "--listen", `127.0.0.1:${port}`], { env, stdio: "inherit" });

for (let i = 0; ; i++) {
  const up = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
  if (up) break;
  if (i > 100) throw new Error("signoff serve did not come up");
  await new Promise((r) => setTimeout(r, 100));
}

const forwarder = http.createServer((req, res) => {
  const upstream = http.request(
    { host: "127.0.0.1", port, method: req.method, path: req.url,
      headers: { ...req.headers, authorization: `Bearer ${token}` } },
    (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    },
  );
  upstream.on("error", () => res.destroy());
  req.pipe(upstream);
});
const forwardPort = await freePort();
await new Promise((r) => forwarder.listen(forwardPort, "127.0.0.1", r));

const cli = path.join(here, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js");
const expected = parse(readFileSync(path.join(here, "expected-failures.yml"), "utf8"));
let failed = false;
for (const version of versions) {
  const baseline = path.join(dir, `expected-failures-${version}.yml`);
  writeFileSync(baseline, stringify({ server: [...expected.server, ...(expected.only?.[version] ?? [])] }));
  const code = await new Promise((resolve) => {
    const run = spawn(process.execPath, [cli, "server",
      "--url", `http://localhost:${forwardPort}/mcp`,
      "--spec-version", version,
      "--expected-failures", baseline], { stdio: "inherit" });
    run.on("exit", resolve);
  });
  console.log(`conformance (${version}): ${code === 0 ? "ok" : `failed (exit ${code})`}`);
  failed ||= code !== 0;
}
forwarder.close();
server.kill("SIGTERM");
process.exit(failed ? 1 : 0);
