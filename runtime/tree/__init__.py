"""Vertical gradient-boosted trees (SecureBoost) with homomorphic encryption through HEU.

`step` trains (leader or follower), `score` scores new aligned data with both
halves, `core` holds the plaintext arithmetic both the leader and the central
reference use, `he` wraps HEU, `binning` turns one side's features into bins.
"""
