"""Deprecated: import from :mod:`agent.sdk` instead (kept for third-party drivers)."""

import warnings

from agent.sdk.readings import *  # noqa: F403
from agent.sdk.readings import __all__  # noqa: F401

warnings.warn("agent.readings is deprecated; import from agent.sdk", DeprecationWarning, stacklevel=2)
