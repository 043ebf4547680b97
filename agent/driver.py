"""Deprecated: import from :mod:`agent.sdk` instead (kept for third-party drivers)."""

import warnings

from agent.sdk.driver import *  # noqa: F403
from agent.sdk.driver import __all__  # noqa: F401

warnings.warn("agent.driver is deprecated; import from agent.sdk", DeprecationWarning, stacklevel=2)
