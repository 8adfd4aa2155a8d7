"""Everything that talks to the chain: compiler, node manager, deployment, client, error decoding."""
