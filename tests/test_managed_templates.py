"""AWS managed job templates: listed, described and used in CreateJob with documentParameters."""

from __future__ import annotations

import json

import pytest

from tests.fleet import Fleet, thing_arn
from tests.harness import REGION, unique

NAMES = [
    "AWS-Download-File",
    "AWS-Install-Application",
    "AWS-Reboot",
    "AWS-Remove-Application",
    "AWS-Restart-Application",
    "AWS-Run-Command",
    "AWS-Start-Application",
    "AWS-Stop-Application",
]


def arn(name: str) -> str:
    return f"arn:aws:iot:{REGION}::jobtemplate/{name}:1.0"


def test_the_eight_managed_templates_are_listed_and_paged(iot) -> None:  # type: ignore[no-untyped-def]
    listed = [
        t["templateName"]
        for p in iot.get_paginator("list_managed_job_templates").paginate()
        for t in p["managedJobTemplates"]
    ]
    assert listed == NAMES
    first = iot.list_managed_job_templates(maxResults=3)
    assert len(first["managedJobTemplates"]) == 3 and first["nextToken"]
    one = iot.list_managed_job_templates(templateName="AWS-Reboot")["managedJobTemplates"]
    assert one == [
        {
            "templateArn": arn("AWS-Reboot"),
            "templateName": "AWS-Reboot",
            "description": "A managed job template for rebooting the device.",
            "environments": ["LINUX"],
            "templateVersion": "1.0",
        }
    ]


def test_describe_gives_document_and_parameters(iot) -> None:  # type: ignore[no-untyped-def]
    t = iot.describe_managed_job_template(templateName="AWS-Download-File", templateVersion="1.0")
    doc = json.loads(t["document"])
    assert doc["version"] == "1.0"
    action = doc["steps"][0]["action"]
    assert action["type"] == "runHandler" and action["input"]["handler"] == "download-file.sh"
    assert action["input"]["args"] == ["${aws:iot:parameter:downloadUrl}", "${aws:iot:parameter:filePath}"]
    params = {p["key"]: p["optional"] for p in t["documentParameters"]}
    assert params == {"downloadUrl": False, "filePath": False, "runAsUser": True, "pathToHandler": True}
    run = iot.describe_managed_job_template(templateName="AWS-Run-Command")
    assert {p["key"] for p in run["documentParameters"]} == {"command", "runAsUser"}
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_managed_job_template(templateName="AWS-Nope")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_managed_job_template(templateName="AWS-Reboot", templateVersion="9.9")


def test_create_job_from_a_managed_template_substitutes_parameters(iot) -> None:  # type: ignore[no-untyped-def]
    thing = Fleet(iot).things(1)[0]
    job_id = unique("cmd")
    iot.create_job(
        jobId=job_id,
        targets=[thing_arn(thing)],
        jobTemplateArn=arn("AWS-Run-Command"),
        documentParameters={"command": 'echo,"hello"'},
    )
    doc = json.loads(iot.get_job_document(jobId=job_id)["document"])
    action = doc["steps"][0]["action"]
    assert action["input"]["command"] == 'echo,"hello"' and action["runAsUser"] == ""
    before = iot.get_job_document(jobId=job_id, beforeSubstitution=True)["document"]
    assert "${aws:iot:parameter:command}" in before
    assert iot.describe_job(jobId=job_id)["job"]["jobTemplateArn"] == arn("AWS-Run-Command")


def test_parameter_errors(iot) -> None:  # type: ignore[no-untyped-def]
    thing = Fleet(iot).things(1)[0]
    with pytest.raises(iot.exceptions.InvalidRequestException, match="downloadUrl"):
        iot.create_job(
            jobId=unique("dl"),
            targets=[thing_arn(thing)],
            jobTemplateArn=arn("AWS-Download-File"),
            documentParameters={"filePath": "/tmp/x"},
        )
    with pytest.raises(iot.exceptions.InvalidRequestException, match="Unknown document parameters"):
        iot.create_job(
            jobId=unique("dl"),
            targets=[thing_arn(thing)],
            jobTemplateArn=arn("AWS-Reboot"),
            documentParameters={"bogus": "1"},
        )
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.create_job(jobId=unique("dl"), targets=[thing_arn(thing)], jobTemplateArn=arn("AWS-Missing"))
