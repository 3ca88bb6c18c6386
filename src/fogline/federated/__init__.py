"""Federated learning across the fleet: strategies, the client trainer, rounds, secure aggregation, privacy.

Work in progress (issue 12): the strategies, secure aggregation and the
privacy accountant land first, each with its own tests; rounds over the
broker and ``fogline fl`` come next.
"""
