"""What crosses from simulation to training: a pydantic type per export row (formats.rows) and for
the run manifest (formats.manifest), checked by their writers and read by their readers."""
