"""The running process: the Agent that wires the pipeline, systemd, logs."""
