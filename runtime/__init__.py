"""Fedsite runtime: the data plane (PSI, vertical split-NN training, scoring).

This package never imports Django, the database or the broker. It runs from one
JSON config file, reads its own side's data, talks to the partner's runtime over
mutual TLS, writes outputs under the job's folder and reports progress to its own
installation over HTTP with a per-job token.
"""
