"""Errors carry the AWS error shape name as their code.

Adapters turn them into the wire form their client expects: the HTTP adapter into a status
code (taken from the botocore model) plus ``x-amzn-ErrorType``, the MQTT adapter into a
``/rejected`` code.  Keeping the AWS name here means the service layer never has to know
which adapter called it.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    code = "InternalFailureException"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = {k: v for k, v in extra.items() if v is not None}


class InvalidRequest(ServiceError):
    code = "InvalidRequestException"


class ResourceNotFound(ServiceError):
    code = "ResourceNotFoundException"


class ResourceAlreadyExists(ServiceError):
    code = "ResourceAlreadyExistsException"


class Conflict(ServiceError):
    code = "ConflictException"


class InvalidStateTransition(ServiceError):
    code = "InvalidStateTransitionException"


class VersionConflict(ServiceError):
    code = "VersionConflictException"


class LimitExceeded(ServiceError):
    code = "LimitExceededException"


class Throttling(ServiceError):
    code = "ThrottlingException"


class TerminalState(ServiceError):
    code = "TerminalStateException"


class Unauthorized(ServiceError):
    code = "UnauthorizedException"


class ServiceUnavailable(ServiceError):
    code = "ServiceUnavailableException"


class InternalFailure(ServiceError):
    code = "InternalFailureException"


class AuthError(ServiceError):
    """Authentication failures; never reach the service layer."""

    status = 403

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
