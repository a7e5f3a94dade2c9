"""Ethereum JSON-RPC (head observation, the Lite demo)."""
