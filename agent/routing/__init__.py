"""Routing on the data path: the coordinator's policies, applied by every agent.

- ``router``: holds the route table and serves a request by its endpoint's policy.
- ``policy``: the strategy interface (``choose``) and the request-key hash;
  one module per kind: ``single``, ``split``, ``canary``, ``shadow``,
  ``ensemble``, ``bandit``.
- ``combiners``: mean, weighted, vote and stacking input for ensembles.
- ``members``: remote members, a proxy to a deployment on another agent.
- ``arm_metrics``: per-(endpoint, arm) counters for heartbeats, status and /metrics.
"""
