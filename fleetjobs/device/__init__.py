"""The device side of fleetjobs: what runs on (or stands in for) a device.

``jobs_session`` is the one client of the AWS IoT Jobs MQTT API that ``fleetjobs agent`` and
``fleetjobs simulate`` share, so that both correlate answers and retry requests the same way. It
depends on nothing of the server's.
"""
