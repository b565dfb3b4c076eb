"""Files in: the one JSONL reader (``runner.io.jsonl``) that every file of lines goes through."""
