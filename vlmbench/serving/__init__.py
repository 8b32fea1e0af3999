"""`vlmbench serve`: any vlmbench model behind an OpenAI-compatible HTTP API (see docs/serving.md)."""
