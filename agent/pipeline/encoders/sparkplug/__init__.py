"""Sparkplug B payloads: the vendored schema, its generated module, datatypes, builders.

``datatypes`` is pure Python (used when a site file is checked); ``encode``
imports protobuf, and is imported only when ``format: sparkplug_b`` is used.
"""
