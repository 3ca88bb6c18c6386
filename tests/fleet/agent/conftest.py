"""The agent tests' shared fixtures (see :mod:`support.agent_fixtures`)."""

from support.agent_fixtures import broker, controller, releases  # noqa: F401
