"""Deprecated: import field types from :mod:`agent.sdk` instead (kept for third-party drivers)."""

import warnings

from agent.sdk.types import *  # noqa: F403
from agent.sdk.types import __all__  # noqa: F401

warnings.warn("agent.config.types is deprecated; import from agent.sdk", DeprecationWarning,
              stacklevel=2)
