"""The training stages on one shared Lightning loop (later issues)."""
