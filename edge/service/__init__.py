"""``safety-edge run``: the gateway as a service, and its configuration tools.

Modules (importing this package imports none of them):

- :mod:`~edge.service.gateway`: :class:`GatewayService`, the composition root of ``run``
  (config -> detectors -> publisher -> pipelines -> API in one process; start/stop order);
- :mod:`~edge.service.tasks`: camera tasks of the config -> stream-layer task specs;
- :mod:`~edge.service.acks`: the MQTT ``ack`` command -> zone monitor + acks table;
- :mod:`~edge.service.config_check`: ``config check`` (every problem, YAML path and line);
- :mod:`~edge.service.example`: the commented example config (``config example``);
- :mod:`~edge.service.notify`: systemd ``sd_notify`` (READY, WATCHDOG, STOPPING) in stdlib;
- :mod:`~edge.service.metrics`: Prometheus text of cameras and publisher;
- :mod:`~edge.service.local_broker`: a local mosquitto for ``make run``;
- :mod:`~edge.service.logs`: text or JSON-lines logging;
- :mod:`~edge.service.commands`: the ``run`` and ``config`` sub-commands.
"""
