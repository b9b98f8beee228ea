"""botocore's service models: the one authority on operations, shapes, errors and constraints.

botocore ships the definition of every AWS operation (method, URI template, input and output
shapes, error shapes with their HTTP status).  The HTTP adapter routes and serialises with it, the
MQTT codec validates device requests with the HTTPS twin of each, and the service layer reads enums
from it, so none of them can drift from what boto3 and the AWS CLI send.
"""

from __future__ import annotations

import functools

import botocore.session
from botocore.model import ServiceModel

# The AWS services fleetjobs answers: SigV4 signing name -> botocore model name (iot-data signs as "iotdata").
SIGNING_NAMES = {"iot": "iot", "iot-jobs-data": "iot-jobs-data", "iotdata": "iot-data"}
SERVICES = tuple(SIGNING_NAMES)


@functools.cache
def service_model(name: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(name)


def error_status(service: str, code: str, default: int = 400) -> int:
    """HTTP status of an error shape as the model fixes it (e.g. LimitExceededException is 410 in iot)."""
    model = service_model(service)
    if code in model.shape_names:
        meta = model.shape_for(code).metadata
        if meta.get("exception"):
            return int(meta.get("error", {}).get("httpStatusCode", default))
    return default
