"""Bulk thing registration (StartThingRegistrationTask and friends) through boto3 against real servers.

The input file goes into the server's artifact store the way a second instance sharing the data
dir would put it (``LocalStore(data_dir)``); reports are downloaded through the presigned
``resourceLinks`` that ListThingRegistrationTaskReports answers, as any client would.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fleetjobs.artifacts.local import LocalStore
from tests.fleet import Fleet, group_arn, thing_arn
from tests.harness import Server, unique

ROLE = "arn:aws:iam::123456789012:role/fleetjobs-registration"
BUCKET = "registration-inputs"
NAME_ONLY = {
    "Parameters": {"ThingName": {"Type": "String"}},
    "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}}},
}


def upload(server: Server, lines: list[Any], key: str | None = None) -> str:
    """Newline-delimited JSON (a str line goes in as it is); returns the key."""
    key = key or f"{unique('in')}.json"
    body = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    LocalStore(server.data_dir, server.endpoint).put(BUCKET, key, body.encode())
    return key


def start(iot: Any, template: dict[str, Any], key: str) -> str:
    task_id: str = iot.start_thing_registration_task(
        templateBody=json.dumps(template), inputFileBucket=BUCKET, inputFileKey=key, roleArn=ROLE
    )["taskId"]
    return task_id


def wait(
    iot: Any, task_id: str, timeout: float = 8.0, until: tuple[str, ...] = ("Completed", "Failed", "Cancelled")
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = iot.describe_thing_registration_task(taskId=task_id)
        if task["status"] in until or time.monotonic() > deadline:
            assert task["status"] in until, task
            return task
        time.sleep(0.05)


def report(iot: Any, task_id: str, kind: str) -> list[dict[str, Any]]:
    """Every line of the report, in order, downloaded through its resource links (all pages)."""
    out: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = iot.list_thing_registration_task_reports(taskId=task_id, reportType=kind, maxResults=2, **kwargs)
        assert page["reportType"] == kind
        for link in page["resourceLinks"]:
            with urllib.request.urlopen(link, timeout=10) as r:
                out.extend(json.loads(line) for line in r.read().decode().splitlines() if line)
        if not page.get("nextToken"):
            return out
        kwargs = {"nextToken": page["nextToken"]}


def groups_of(iot: Any, thing: str) -> list[str]:
    return sorted(g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=thing)["thingGroups"])


def members(iot: Any, group: str) -> list[str]:
    out: list[str] = []
    for page in iot.get_paginator("list_things_in_thing_group").paginate(
        thingGroupName=group, PaginationConfig={"PageSize": 250}
    ):
        out.extend(page["things"])
    return out


def test_template_parameters_make_things(iot: Any, server: Server) -> None:
    p = unique("bulk")
    iot.create_thing_type(thingTypeName=f"{p}-bulb")
    for g in ("v1", "WA", "OR"):
        iot.create_thing_group(thingGroupName=f"{p}-{g}")
    template = {
        "Parameters": {
            "ThingName": {"Type": "String"},
            "SerialNumber": {"Type": "String"},
            "Location": {"Type": "String", "Default": "WA"},
        },
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {
                    "ThingName": {"Fn::Join": ["-", [p, {"Ref": "ThingName"}]]},
                    "AttributePayload": {"version": "v1", "serialNumber": {"Ref": "SerialNumber"}},
                    "ThingTypeName": f"{p}-bulb",
                    "ThingGroups": [f"{p}-v1", {"Fn::Sub": f"{p}-${{Location}}"}],
                },
            }
        },
    }
    key = upload(
        server,
        [{"ThingName": "foo", "SerialNumber": "123"}, {"ThingName": "bar", "SerialNumber": 456, "Location": "OR"}],
    )
    task_id = start(iot, template, key)
    assert task_id in iot.list_thing_registration_tasks()["taskIds"]
    task = wait(iot, task_id)
    assert task["status"] == "Completed"
    assert (task["successCount"], task["failureCount"], task["percentageProgress"]) == (2, 0, 100)
    assert (task["inputFileBucket"], task["inputFileKey"], task["roleArn"]) == (BUCKET, key, ROLE)
    assert json.loads(task["templateBody"]) == template
    assert task["creationDate"] <= task["lastModifiedDate"]
    assert task_id in iot.list_thing_registration_tasks(status="Completed")["taskIds"]
    assert task_id not in iot.list_thing_registration_tasks(status="InProgress")["taskIds"]

    foo = iot.describe_thing(thingName=f"{p}-foo")
    assert foo["thingTypeName"] == f"{p}-bulb"
    assert foo["attributes"] == {"version": "v1", "serialNumber": "123"}
    assert foo["version"] == 1
    assert groups_of(iot, f"{p}-foo") == [f"{p}-WA", f"{p}-v1"]
    assert iot.describe_thing(thingName=f"{p}-bar")["attributes"]["serialNumber"] == "456"
    assert groups_of(iot, f"{p}-bar") == [f"{p}-OR", f"{p}-v1"]
    assert sorted(members(iot, f"{p}-v1")) == [f"{p}-bar", f"{p}-foo"]

    assert report(iot, task_id, "ERRORS") == []
    assert report(iot, task_id, "RESULTS") == [
        {"referenceId": "0", "response": {"resourceArns": {"thing": thing_arn(f"{p}-foo")}}},
        {"referenceId": "1", "response": {"resourceArns": {"thing": thing_arn(f"{p}-bar")}}},
    ]


def test_per_line_failures_go_to_errors_and_successes_to_results(iot: Any, server: Server) -> None:
    p = unique("lines")
    iot.create_thing_type(thingTypeName=f"{p}-type")
    iot.create_thing_group(thingGroupName=f"{p}-g")
    iot.create_thing(thingName=f"{p}-same", attributePayload={"attributes": {"k": "v"}})
    iot.create_thing(thingName=f"{p}-other", attributePayload={"attributes": {"k": "old"}})
    template = {
        "Parameters": {
            "Name": {"Type": "String"},
            "Type": {"Type": "String", "Default": f"{p}-type"},
            "Group": {"Type": "String", "Default": f"{p}-g"},
            "K": {"Type": "String", "Default": "v"},
        },
        "Resources": {
            "device": {
                "Type": "AWS::IoT::Thing",
                "Properties": {
                    "ThingName": {"Ref": "Name"},
                    "ThingTypeName": {"Ref": "Type"},
                    "AttributePayload": {"k": {"Ref": "K"}},
                    "ThingGroups": [{"Ref": "Group"}],
                },
            }
        },
    }
    same = {"Name": f"{p}-same", "Type": ""}  # exactly as it exists: CreateThing's idempotent success
    lines: list[Any] = [
        {"Name": f"{p}-ok"},  # 0
        "this is not JSON",  # 1
        {"Name": f"{p}-nogroup", "Group": f"{p}-missing"},  # 2
        {"Name": f"{p}-notype", "Type": f"{p}-missing"},  # 3
        same,  # 4
        {"Name": f"{p}-other", "Type": ""},  # 5: exists with other attributes
        {"Name": "bad name!"},  # 6
        ["not", "an", "object"],  # 7
        {},  # 8: no Name and no default
        {"Name": f"{p}-ok"},  # 9: the thing line 0 made, the same again
    ]
    task_id = start(iot, template, upload(server, lines))
    task = wait(iot, task_id)
    assert (task["status"], task["successCount"], task["failureCount"]) == ("Completed", 3, 7)

    errors = {e["referenceId"]: e for e in report(iot, task_id, "ERRORS")}
    assert sorted(errors, key=int) == ["1", "2", "3", "5", "6", "7", "8"]
    codes = {ref: e["errorCode"] for ref, e in errors.items()}
    assert codes == {
        "1": "InvalidRequestException",
        "2": "ResourceNotFoundException",
        "3": "ResourceNotFoundException",
        "5": "ResourceAlreadyExistsException",
        "6": "InvalidRequestException",
        "7": "InvalidRequestException",
        "8": "InvalidRequestException",
    }
    assert errors["2"]["errorMessage"] == f"Thing group {p}-missing cannot be found."
    assert errors["3"]["errorMessage"] == f"Thing type {p}-missing cannot be found."
    assert "failed to satisfy constraint" in errors["6"]["errorMessage"] and "thingName" in errors["6"]["errorMessage"]
    results = report(iot, task_id, "RESULTS")
    assert [r["referenceId"] for r in results] == ["0", "4", "9"]
    assert results[0]["response"]["resourceArns"] == {"device": thing_arn(f"{p}-ok")}

    # A failed line created nothing; the refused existing thing is untouched; the good one is whole.
    for name in (f"{p}-nogroup", f"{p}-notype"):
        with pytest.raises(iot.exceptions.ResourceNotFoundException):
            iot.describe_thing(thingName=name)
    assert iot.describe_thing(thingName=f"{p}-other")["attributes"] == {"k": "old"}
    ok = iot.describe_thing(thingName=f"{p}-ok")
    assert (ok["thingTypeName"], ok["attributes"]) == (f"{p}-type", {"k": "v"})
    assert groups_of(iot, f"{p}-ok") == [f"{p}-g"]
    assert groups_of(iot, f"{p}-same") == [f"{p}-g"]  # an existing thing joins the template's groups


def test_override_settings_for_existing_things(iot: Any, server: Server) -> None:
    p = unique("override")
    iot.create_thing_group(thingGroupName=f"{p}-g")
    iot.create_thing(thingName=f"{p}-a", attributePayload={"attributes": {"k": "old"}})
    iot.create_thing(thingName=f"{p}-b")

    def template(overrides: dict[str, str]) -> dict[str, Any]:
        return {
            "Parameters": {"ThingName": {"Type": "String"}},
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": {
                        "ThingName": {"Ref": "ThingName"},
                        "AttributePayload": {"k": "new"},
                        "ThingGroups": [f"{p}-g"],
                    },
                    "OverrideSettings": overrides,
                }
            },
        }

    lines = [{"ThingName": f"{p}-a"}, {"ThingName": f"{p}-new"}]
    keep = template({"AttributePayload": "DO_NOTHING", "ThingGroups": "DO_NOTHING"})
    task = wait(iot, start(iot, keep, upload(server, lines)))
    assert (task["successCount"], task["failureCount"]) == (2, 0)
    assert iot.describe_thing(thingName=f"{p}-a")["attributes"] == {"k": "old"}  # left as it is
    assert groups_of(iot, f"{p}-a") == []
    assert groups_of(iot, f"{p}-new") == [f"{p}-g"]  # a new thing gets the template's groups
    strict = template({"AttributePayload": "DO_NOTHING", "ThingGroups": "FAIL"})
    task = wait(iot, start(iot, strict, upload(server, [{"ThingName": f"{p}-b"}, {"ThingName": f"{p}-new"}])))
    assert (task["successCount"], task["failureCount"]) == (1, 1)
    (error,) = report(iot, task["taskId"], "ERRORS")
    assert (error["referenceId"], error["errorCode"]) == ("0", "ResourceConflictsException")
    assert groups_of(iot, f"{p}-b") == []
    with pytest.raises(iot.exceptions.InvalidRequestException, match="REPLACE is not supported"):
        start(iot, template({"ThingTypeName": "REPLACE"}), upload(server, lines))


def test_bad_files_and_templates(iot: Any, server: Server) -> None:
    with pytest.raises(iot.exceptions.InvalidRequestException, match="does not exist"):
        start(iot, NAME_ONLY, f"{unique('missing')}.json")
    key = upload(server, [{"ThingName": unique("x")}])
    for bad, match in (
        ("{not json", "not valid JSON"),
        (
            json.dumps({"Resources": {"c": {"Type": "AWS::IoT::Certificate", "Properties": {}}}}),
            "AWS::IoT::Certificate",
        ),
        (
            json.dumps(
                {
                    **NAME_ONLY,
                    "Resources": {"t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "Nope"}}}},
                }
            ),
            "Nope",
        ),
    ):
        with pytest.raises(iot.exceptions.InvalidRequestException, match=match):
            iot.start_thing_registration_task(templateBody=bad, inputFileBucket=BUCKET, inputFileKey=key, roleArn=ROLE)
    with pytest.raises(iot.exceptions.InvalidRequestException, match="IAM role ARN"):
        iot.start_thing_registration_task(
            templateBody=json.dumps(NAME_ONLY),
            inputFileBucket=BUCKET,
            inputFileKey=key,
            roleArn="not-a-role-arn-at-all",
        )
    # An empty file is a task with nothing to do.
    empty = upload(server, [])
    task = wait(iot, start(iot, NAME_ONLY, empty))
    assert (task["status"], task["successCount"], task["failureCount"], task["percentageProgress"]) == (
        "Completed",
        0,
        0,
        100,
    )
    assert iot.list_thing_registration_task_reports(taskId=task["taskId"], reportType="RESULTS")["resourceLinks"] == []
    # Blank lines are skipped but still counted: referenceIds stay the file's line numbers.
    name = unique("blank")
    task = wait(iot, start(iot, NAME_ONLY, upload(server, ["", "not json", "   ", {"ThingName": name}])))
    assert (task["successCount"], task["failureCount"]) == (1, 1)
    assert [e["referenceId"] for e in report(iot, task["taskId"], "ERRORS")] == ["1"]
    assert [r["referenceId"] for r in report(iot, task["taskId"], "RESULTS")] == ["3"]
    # Unknown tasks.
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_registration_task(taskId="no-such-task")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.stop_thing_registration_task(taskId="no-such-task")
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.list_thing_registration_task_reports(taskId="no-such-task", reportType="ERRORS")
    with pytest.raises(iot.exceptions.InvalidRequestException, match="Completed"):
        iot.stop_thing_registration_task(taskId=task["taskId"])


def test_stop_midway_keeps_partial_counts_and_creates_nothing_more(iot: Any, server: Server) -> None:
    p = unique("stop")
    group = iot.create_thing_group(thingGroupName=p)["thingGroupName"]
    n = 40_000
    template = {
        "Parameters": {"ThingName": {"Type": "String"}},
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {"ThingName": {"Ref": "ThingName"}, "ThingGroups": [group]},
            }
        },
    }
    key = upload(server, [{"ThingName": f"{p}-{i:05d}"} for i in range(n)])
    task_id = start(iot, template, key)
    iot.stop_thing_registration_task(taskId=task_id)
    assert iot.describe_thing_registration_task(taskId=task_id)["status"] in ("Cancelling", "Cancelled")
    task = wait(iot, task_id)
    assert task["status"] == "Cancelled"
    done = task["successCount"]
    assert done < n and task["failureCount"] == 0
    assert task["percentageProgress"] < 100
    iot.stop_thing_registration_task(taskId=task_id)  # stopping a stopped task changes nothing
    time.sleep(1.0)
    again = iot.describe_thing_registration_task(taskId=task_id)
    assert (again["status"], again["successCount"], again["lastModifiedDate"]) == (
        "Cancelled",
        done,
        task["lastModifiedDate"],
    )
    assert len(members(iot, group)) == done
    assert len(report(iot, task_id, "RESULTS")) == done
    assert task_id in iot.list_thing_registration_tasks(status="Cancelled")["taskIds"]


def test_a_continuous_job_on_a_group_runs_on_registered_things(iot: Any, server: Server) -> None:
    fleet = Fleet(iot)
    (early,) = fleet.things(1)
    parent = fleet.group("parent", [early])
    child = fleet.group("child", parent=parent)
    job_id = fleet.job([group_arn(parent)], targetSelection="CONTINUOUS")
    names = [f"{fleet.prefix}-bulk{i}" for i in range(3)]
    template = {
        "Parameters": {"ThingName": {"Type": "String"}},
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {"ThingName": {"Ref": "ThingName"}, "ThingGroups": [child]},
            }
        },
    }
    task = wait(iot, start(iot, template, upload(server, [{"ThingName": n} for n in names])))
    assert task["successCount"] == 3
    summaries = iot.list_job_executions_for_job(jobId=job_id)["executionSummaries"]
    statuses = {s["thingArn"].rsplit("/", 1)[1]: s["jobExecutionSummary"]["status"] for s in summaries}
    assert statuses == dict.fromkeys([early, *names], "QUEUED")
    assert iot.describe_job(jobId=job_id)["job"]["jobProcessDetails"]["numberOfQueuedThings"] == 4
    device = server.client("iot-jobs-data")
    pending = device.get_pending_job_executions(thingName=names[0])["queuedJobs"]
    assert [j["jobId"] for j in pending] == [job_id]


@pytest.fixture
def own_server(backends: Any) -> Server:
    """A server of the test's own: it changes account-wide settings, or is stopped and restarted."""
    return backends.server().start()


def test_registered_things_join_dynamic_groups(own_server: Server) -> None:
    iot = own_server.client("iot")
    iot.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "REGISTRY"})
    p = unique("dyn")
    iot.create_dynamic_thing_group(thingGroupName=f"{p}-sensors", queryString="attributes.kind:sensor")
    job_id = unique("job")
    iot.create_job(jobId=job_id, targets=[group_arn(f"{p}-sensors")], document="{}", targetSelection="CONTINUOUS")
    template = {
        "Parameters": {"ThingName": {"Type": "String"}, "Kind": {"Type": "String"}},
        "Resources": {
            "thing": {
                "Type": "AWS::IoT::Thing",
                "Properties": {"ThingName": {"Ref": "ThingName"}, "AttributePayload": {"kind": {"Ref": "Kind"}}},
            }
        },
    }
    lines = [{"ThingName": f"{p}-s{i}", "Kind": "sensor"} for i in range(3)] + [
        {"ThingName": f"{p}-m", "Kind": "meter"}
    ]
    task = wait(iot, start(iot, template, upload(own_server, lines)))
    assert task["successCount"] == 4
    assert sorted(members(iot, f"{p}-sensors")) == [f"{p}-s0", f"{p}-s1", f"{p}-s2"]
    things = {
        s["thingArn"].rsplit("/", 1)[1] for s in iot.list_job_executions_for_job(jobId=job_id)["executionSummaries"]
    }
    assert things == {f"{p}-s0", f"{p}-s1", f"{p}-s2"}


def test_a_task_resumes_after_a_restart(backends: Any, own_server: Server) -> None:
    iot = own_server.client("iot")
    p = unique("resume")
    n = 40_000
    task_id = start(iot, NAME_ONLY, upload(own_server, [{"ThingName": f"{p}-{i:05d}"} for i in range(n)]))
    deadline = time.monotonic() + 8
    while (before := iot.describe_thing_registration_task(taskId=task_id))["successCount"] == 0:
        assert time.monotonic() < deadline, before
        time.sleep(0.02)
    own_server.stop()  # mid-task: the chunk under way rolls back, the lease is given back
    assert before["status"] == "InProgress" and before["successCount"] < n
    restarted = backends.server(
        data_dir=own_server.data_dir, database_url=own_server.database_url, port=own_server.port
    ).start()
    iot = restarted.client("iot")
    task = wait(iot, task_id, timeout=10)
    assert (task["status"], task["successCount"], task["failureCount"]) == ("Completed", n, 0)
    refs = [r["referenceId"] for r in report(iot, task_id, "RESULTS")]
    assert len(refs) == n and len(set(refs)) == n  # every line once: no chunk ran twice, none was lost
    with pytest.raises(ClientError):
        iot.describe_thing(thingName=f"{p}-{n:05d}")
    assert iot.describe_thing(thingName=f"{p}-{n - 1:05d}")["version"] == 1
