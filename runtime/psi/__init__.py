"""Private set intersection between the two runtimes (see docs/psi.md)."""
