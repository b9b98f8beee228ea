"""Endpoint discovery (JOBS_API.md §1.12): DescribeEndpoint.

Every AWS IoT SDK sample asks the service where devices should connect before it connects, so
fleetjobs answers with its own host names, in AWS's form (a bare host: no scheme, no port):

* ``iot:Data`` and ``iot:Data-ATS`` (and no endpointType, which AWS answers as ``iot:Data``): the
  MQTT broker devices use;
* ``iot:Jobs``: the host of the device HTTPS API (``iot-jobs-data``), this server.

Where those are comes from the settings (:meth:`EndpointAddresses.from_settings`):
``public_host`` when the operator gives one (what devices reach, whatever fleetjobs listens on or
connects to), else the host of ``mqtt_url`` / the embedded broker's listen address for data, and
the host of ``public_url`` / the HTTP listen address for jobs.  A wildcard listen address
(``0.0.0.0``) names no host a device can use, so it is answered as loopback, like the banner does.

``iot:CredentialProvider`` is a real AWS endpoint type, but fleetjobs has no credentials provider
(it issues no temporary AWS credentials), so it is answered as any endpoint type the service does
not have: InvalidRequestException.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fleetjobs.config import Settings
from fleetjobs.domain.errors import InvalidRequest
from fleetjobs.model import shapes_iot as shapes
from fleetjobs.service.context import ServiceContext

DATA = "iot:Data"
DATA_ATS = "iot:Data-ATS"
JOBS = "iot:Jobs"
CREDENTIAL_PROVIDER = "iot:CredentialProvider"
_WILDCARDS = ("", "0.0.0.0", "::")


def _reachable(host: str) -> str:
    return "127.0.0.1" if host in _WILDCARDS else host


@dataclass(frozen=True)
class EndpointAddresses:
    data: str  # the MQTT broker's host (iot:Data, iot:Data-ATS)
    jobs: str  # the device HTTPS API's host (iot:Jobs)

    @classmethod
    def from_settings(cls, settings: Settings) -> EndpointAddresses:
        if settings.public_host:
            return cls(data=settings.public_host, jobs=settings.public_host)
        broker = urlsplit(settings.mqtt_url).hostname if settings.mqtt_url else None
        http = urlsplit(settings.public_url).hostname if settings.public_url else None
        return cls(data=_reachable(broker or settings.mqtt_host), jobs=_reachable(http or settings.host))


class Endpoints:
    def __init__(self, ctx: ServiceContext, addresses: EndpointAddresses | None = None) -> None:
        self.ctx = ctx
        self.addresses = addresses or EndpointAddresses.from_settings(Settings())

    async def describe_endpoint(self, req: shapes.DescribeEndpointRequest) -> dict[str, Any]:
        kind = req.get("endpointType") or DATA
        if kind in (DATA, DATA_ATS):
            return {"endpointAddress": self.addresses.data}
        if kind == JOBS:
            return {"endpointAddress": self.addresses.jobs}
        if kind == CREDENTIAL_PROVIDER:
            raise InvalidRequest(
                f"Endpoint type {kind} not recognized: fleetjobs has no credentials provider "
                f"(it serves {DATA}, {DATA_ATS} and {JOBS})."
            )
        raise InvalidRequest(f"Endpoint type {kind} not recognized.")
