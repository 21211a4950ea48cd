"""Settings package: base settings completed by environment variables (see env.py)."""

from portal.settings.base import *  # noqa: F403
