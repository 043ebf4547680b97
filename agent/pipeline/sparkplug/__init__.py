"""The Sparkplug B edge node (``format: sparkplug_b``) inside the uplink's one MQTT session.

- ``context``: what the node needs from the running agent (devices, latest
  values, drivers for DCMD writes, the restart callback); no protobuf.
- ``bdseq``: the birth/death sequence number, persisted in the state dir.
- ``host``: the primary host's STATE messages.
- ``devices``: one device as born (aliases, datatypes, what was last sent)
  and its DBIRTH/DDATA payloads from stored batches.
- ``node``: the session: will, subscriptions, births, seq, data, commands.

Only ``context`` is imported by the rest of the agent; the uplink imports
``node`` (and with it protobuf) when the format is used.
"""
