"""Launcher backends: where a job's runtime runs (a local process group or a Kubernetes Job).

This package's `supervise` module must stay free of Django imports: it runs as the
parent of the runtime process.
"""
