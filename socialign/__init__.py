"""The `socialign` command line: parses arguments and calls agents, scenarios, sandbox, align."""
