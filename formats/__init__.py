"""What crosses from simulation to training: a pydantic type per export row (formats.rows)."""
