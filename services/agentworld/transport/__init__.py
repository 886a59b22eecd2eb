"""Transports: thin edges (gRPC, MCP) over the one runtime core."""
