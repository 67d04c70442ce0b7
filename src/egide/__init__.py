"""Égide: a self-hostable platform that keeps patient data safe.

The package is split into rooms (see DESIGN.md); each room imports only rooms on lower layers,
which import-linter enforces in the test run.
"""

__version__ = "0.1.0"
