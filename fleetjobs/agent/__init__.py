"""``fleetjobs agent``: a device agent speaking the AWS IoT Jobs MQTT API.

The names are imported lazily so that ``fleetjobs --help`` does not load the MQTT client.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Agent", "AgentConfig", "AgentError", "configure_logging"]


def __getattr__(name: str) -> Any:
    if name in ("Agent", "AgentConfig", "AgentError"):
        from fleetjobs.agent import agent

        return getattr(agent, name)
    if name == "configure_logging":
        from fleetjobs.agent.logs import configure_logging

        return configure_logging
    raise AttributeError(name)
