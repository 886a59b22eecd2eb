"""Environment synthesis: the offline generator (default backend) and the LLM pipeline (`pipeline`)."""
