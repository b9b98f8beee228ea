"""fleetjobs: a self-hosted service for running jobs on device fleets, AWS IoT Jobs compatible."""

__version__ = "0.1.0"
