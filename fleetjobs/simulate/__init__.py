"""``fleetjobs simulate``: a fleet of virtual devices that take jobs over MQTT.

A demo of rollouts and abort thresholds, and a load generator for benches. See :func:`run_fleet`.
"""

from fleetjobs.simulate.fleet import (
    FleetConfig,
    FleetSummary,
    register_fleet,
    run_fleet,
    thing_names,
)

__all__ = ["FleetConfig", "FleetSummary", "register_fleet", "run_fleet", "thing_names"]
