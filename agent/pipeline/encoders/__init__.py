"""Encoders: a stored batch -> the bytes of one data message.

An encoder has two jobs and a small interface (see ``json.JsonEncoder``):
``overhead(device)`` is how many bytes its envelope adds around a stored
batch's samples, measured as encoded for the largest possible ``seq``, so the
buffer can pack batches that never exceed ``max_message``; ``encode(batch)``
makes the message.

``sparkplug``: the Sparkplug B payloads (``format: sparkplug_b``), built by
the edge node in ``agent.pipeline.sparkplug``; it imports protobuf, and only
when that format is used.
"""
