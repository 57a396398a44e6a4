"""The local HTTP API that speaks the cloud contract (``../shared/CONTRACT.md``).

- :mod:`edge.api.store`: applications, grants, resource packages (quota), per-minute
  monitoring and alerts in one SQLite file (WAL).
- :mod:`edge.api.alerts`: alert rules evaluated over the store; hand-off to MQTT.
- :mod:`edge.api.commands`: ``safety-edge apps|quota|alerts ...`` sub-commands.

Nothing is imported or started here; import the sub-modules you need.
"""
