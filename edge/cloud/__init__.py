"""Clients for the cloud contract: the same signed HTTP APIs served by the provider's
cloud, by another safety-edge gateway, or by this one.

- :mod:`edge.cloud.client`: :class:`~edge.cloud.client.ContractClient` (httpx), signing
  exactly like the provider's sample and parsing answers into typed results.

Nothing is imported or opened here.
"""
