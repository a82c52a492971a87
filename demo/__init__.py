"""The two-party demo: reproducible data and the driver behind `make demo`."""
