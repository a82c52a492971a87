"""Vertical split-NN training and federated scoring (leader holds labels, follower features only).

Modules: ``params`` (the ``train`` config block), ``data`` (reading, alignment hashes,
preprocessing), ``nn`` (Keras halves, compiled steps, checkpoints, export), ``link``
(the gRPC stream over mutual TLS), ``metrics`` (AUC, KS...), ``step`` (the ``train``
command) and ``score`` (the ``score`` command). See docs/training.md.
"""
