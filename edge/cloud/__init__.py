"""Clients for the cloud contract: the same signed HTTP APIs served by the provider's
cloud, by another safety-edge gateway, or by this one.

- :mod:`edge.cloud.client`: :class:`~edge.cloud.client.ContractClient` (httpx), signing
  exactly like the provider's sample and parsing answers into typed results.
- :mod:`edge.cloud.fallback`: :class:`~edge.cloud.fallback.FallbackClient`, which asks
  such an endpoint about uncertain local results and merges its answer, within a
  deadline, retries, a circuit breaker (:mod:`edge.cloud.breaker`) and a daily request
  budget persisted in SQLite (:mod:`edge.cloud.budget`).

Nothing is imported or opened here.
"""
