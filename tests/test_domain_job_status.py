"""The job lifecycle rules (fleetjobs.domain.job_status): which statuses each API refuses, and with which AWS error."""

from __future__ import annotations

import pytest

from fleetjobs.domain import job_status as js
from fleetjobs.domain.errors import InvalidRequest, InvalidStateTransition

ALL = js.ALL_STATUSES


def test_status_sets():
    assert ALL == ("SCHEDULED", "IN_PROGRESS", "COMPLETED", "CANCELED", "DELETION_IN_PROGRESS")
    assert [s for s in ALL if js.is_active(s)] == ["SCHEDULED", "IN_PROGRESS"]


# -- CancelJob --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["SCHEDULED", "IN_PROGRESS"])
@pytest.mark.parametrize("force", [False, True])
def test_cancel_active_job_is_allowed(status, force):
    assert js.check_cancel("j", status, force=force, already_force_canceled=False) is None


def test_canceled_job_can_be_force_canceled_once():
    assert js.check_cancel("j", "CANCELED", force=True, already_force_canceled=False) is None
    with pytest.raises(InvalidRequest, match="already canceled") as exc:
        js.check_cancel("j", "CANCELED", force=True, already_force_canceled=True)
    assert exc.type is InvalidRequest


@pytest.mark.parametrize("already", [False, True])
def test_canceled_job_cannot_be_canceled_again_without_force(already):
    with pytest.raises(InvalidRequest, match="Job j is already canceled") as exc:
        js.check_cancel("j", "CANCELED", force=False, already_force_canceled=already)
    assert exc.type is InvalidRequest


@pytest.mark.parametrize(
    ("status", "message"),
    [("COMPLETED", "Job j is COMPLETED and cannot be canceled"), ("DELETION_IN_PROGRESS", "Job j is being deleted")],
)
@pytest.mark.parametrize("force", [False, True])
def test_cancel_refused_for_completed_and_deleting(status, message, force):
    with pytest.raises(InvalidRequest, match=message) as exc:
        js.check_cancel("j", status, force=force, already_force_canceled=False)
    assert exc.type is InvalidRequest
    assert exc.value.code == "InvalidRequestException"


# -- UpdateJob --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ALL)
def test_update_only_active_jobs(status):
    if status in ("SCHEDULED", "IN_PROGRESS"):
        assert js.check_update("j", status) is None
        return
    with pytest.raises(InvalidRequest, match=f"Job j is {status} and can no longer be updated") as exc:
        js.check_update("j", status)
    assert exc.type is InvalidRequest


# -- DeleteJob --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["COMPLETED", "CANCELED"])
@pytest.mark.parametrize("force", [False, True])
def test_delete_terminal_job_with_or_without_force(status, force):
    assert js.check_delete("j", status, force=force) is None


@pytest.mark.parametrize("status", ["SCHEDULED", "IN_PROGRESS"])
def test_delete_active_job_needs_force(status):
    assert js.check_delete("j", status, force=True) is None
    with pytest.raises(InvalidStateTransition, match=f"in status {status} without force") as exc:
        js.check_delete("j", status, force=False)
    assert exc.value.code == "InvalidStateTransitionException"


@pytest.mark.parametrize("force", [False, True])
def test_delete_refused_while_deleting(force):
    with pytest.raises(InvalidStateTransition, match="Job j is already being deleted") as exc:
        js.check_delete("j", "DELETION_IN_PROGRESS", force=force)
    assert exc.type is InvalidStateTransition


# -- AssociateTargetsWithJob ------------------------------------------------------------------------


def test_associate_targets_with_in_progress_continuous_job():
    assert js.check_associate_targets("j", "IN_PROGRESS", "CONTINUOUS") is None


@pytest.mark.parametrize("status", ALL)
def test_associate_targets_refuses_snapshot_jobs(status):
    with pytest.raises(InvalidRequest, match="targetSelection is CONTINUOUS") as exc:
        js.check_associate_targets("j", status, "SNAPSHOT")
    assert exc.type is InvalidRequest


@pytest.mark.parametrize("status", [s for s in ALL if s != "IN_PROGRESS"])
def test_associate_targets_refuses_continuous_job_not_in_progress(status):
    with pytest.raises(InvalidRequest, match=f"only be associated with an IN_PROGRESS job; j is {status}") as exc:
        js.check_associate_targets("j", status, "CONTINUOUS")
    assert exc.type is InvalidRequest


# -- isConcurrent -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "processing", "expected"),
    [
        ("IN_PROGRESS", ["arn:aws:iot:r:1:thing/a"], True),
        ("IN_PROGRESS", [], False),
        ("IN_PROGRESS", None, False),
        ("DELETION_IN_PROGRESS", None, True),
        ("SCHEDULED", ["arn:aws:iot:r:1:thing/a"], False),
        ("CANCELED", ["arn:aws:iot:r:1:thing/a"], False),
        ("COMPLETED", None, False),
    ],
)
def test_is_concurrent(status, processing, expected):
    assert js.is_concurrent(status, processing) is expected
