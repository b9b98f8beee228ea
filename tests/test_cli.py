"""The ``fleetjobs`` command: help, configuration precedence, generated keys, the start banner.

Settings precedence is tested on ``Settings.load`` directly and once end to end; everything else
runs the installed ``fleetjobs`` command in a subprocess on a free port and a temporary data dir,
and talks to it with boto3 and the AWS CLI.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fleetjobs.config import Settings, default_data_dir, resolve_access_key
from tests.harness import ACCESS_KEY_ID, ISOLATED_ENV, SECRET_ACCESS_KEY, Server, free_port, unique, wait_healthy

FLEETJOBS = str(Path(sys.executable).with_name("fleetjobs"))  # the console script pip installed

OPTIONS = [
    "--host",
    "--port",
    "--data-dir",
    "--database-url",
    "--access-key-id",
    "--secret-access-key",
    "--region",
    "--account-id",
    "--log-level",
    "--config",
]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEETJOBS_")}
    return subprocess.run([FLEETJOBS, *args], capture_output=True, text=True, timeout=60, env={**base, **(env or {})})


def client_with(endpoint: str, key_id: str, secret: str, region: str = "us-east-1") -> Any:
    return boto3.client(
        "iot",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def printed_keys(output: str) -> tuple[str, str]:
    key_id = re.search(r"access key id: (\S+)", output)
    secret = re.search(r"secret access key: (\S+)", output)
    assert key_id and secret, output
    return key_id.group(1), secret.group(1)


def banner_section(output: str, title: str) -> str:
    """The indented block printed under ``title:`` in the start banner, dedented."""
    lines = output.splitlines()
    start = lines.index(f"{title}:") + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


@pytest.fixture
def keyless(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A server started without configured keys, on a fresh data dir (SQLite)."""
    servers: list[Server] = []

    def start(data_dir: Path | None = None) -> Server:
        srv = Server(data_dir=data_dir or tmp_path / "data", credentials=False).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


# --- help -------------------------------------------------------------------------------------


def test_top_level_help_explains_the_product_and_its_commands() -> None:
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "usage: fleetjobs" in text
    assert "serve" in text and "run the fleetjobs server" in text
    assert "AWS IoT Jobs" in text and "boto3" in text and "AWS CLI" in text
    assert "FLEETJOBS_" in text and "--config" in text


def test_serve_help_explains_every_option_its_variable_and_the_precedence() -> None:
    out = run_cli("serve", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for option in OPTIONS:
        assert option in text, option
        assert "FLEETJOBS_" + option.lstrip("-").replace("-", "_").upper() in text, option
    assert "default 8090" in text and "default 127.0.0.1" in text and "default us-east-1" in text
    assert "postgresql://" in text and "SQLite" in text
    assert "credentials.json" in text
    assert "A flag wins over the environment, which wins over the file" in text


def test_no_command_prints_help_and_fails() -> None:
    out = run_cli()
    assert out.returncode == 2
    assert "serve" in out.stdout


def test_version() -> None:
    from fleetjobs import __version__

    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"fleetjobs {__version__}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "/nonexistent/fleetjobs.toml"], "No such file"),
        (["--port", "eighty"], "invalid int value"),
        (["--log-level", "chatty"], "log_level must be one of"),
        (["--access-key-id", "AKIDONLY"], "set both"),
    ],
)
def test_bad_settings_are_refused_with_a_usage_error(args: list[str], message: str, tmp_path: Path) -> None:
    out = run_cli("serve", "--data-dir", str(tmp_path), "--port", str(free_port()), *args)
    assert out.returncode == 2, out
    assert "fleetjobs serve: error:" in out.stderr and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "fleetjobs.toml"
    conf.write_text("port = 8091\nprot = 8092\n")
    out = run_cli("serve", "--config", str(conf), "--data-dir", str(tmp_path))
    assert out.returncode == 2
    assert "unknown setting(s): prot" in out.stderr


# --- Settings.load precedence -----------------------------------------------------------------


def write_toml(path: Path, **values: Any) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_defaults(tmp_path: Path) -> None:
    s = Settings.load({}, env={"XDG_DATA_HOME": str(tmp_path)})
    assert (s.host, s.port, s.region, s.account_id, s.log_level) == (
        "127.0.0.1",
        8090,
        "us-east-1",
        "123456789012",
        "info",
    )
    assert s.database_url is None and s.access_key_id is None and s.secret_access_key is None
    assert s.data_dir == tmp_path / "fleetjobs"
    assert default_data_dir({}) == Path.home() / ".local" / "share" / "fleetjobs"


@pytest.mark.parametrize(
    ("field", "file_value", "env_value", "flag_value", "expected_type"),
    [
        ("port", 8101, "8102", 8103, int),
        ("host", "10.0.0.1", "10.0.0.2", "10.0.0.3", str),
        ("region", "eu-west-1", "eu-west-2", "eu-west-3", str),
        ("account_id", "111111111111", "222222222222", "333333333333", str),
        ("database_url", "postgresql://f/db", "postgresql://e/db", "postgresql://c/db", str),
        ("log_level", "error", "warning", "debug", str),
    ],
)
def test_flag_beats_env_beats_file_beats_default(
    tmp_path: Path, field: str, file_value: Any, env_value: str, flag_value: Any, expected_type: type
) -> None:
    conf = write_toml(tmp_path / "c.toml", **{field: file_value})
    env_name = f"FLEETJOBS_{field.upper()}"
    default = getattr(Settings(), field)

    def value(flags: dict[str, Any], env: dict[str, str]) -> Any:
        got = getattr(Settings.load(flags, env=env), field)
        assert isinstance(got, expected_type) or got is None
        return got

    assert value({}, {}) == default
    assert value({"config": str(conf)}, {}) == expected_type(file_value)
    assert value({"config": str(conf)}, {env_name: env_value}) == expected_type(env_value)
    assert value({"config": str(conf), field: flag_value}, {env_name: env_value}) == expected_type(flag_value)
    # an unset flag (argparse's None) and an empty variable do not count as set
    assert value({"config": str(conf), field: None}, {env_name: ""}) == expected_type(file_value)


def test_keys_and_data_dir_follow_the_same_precedence(tmp_path: Path) -> None:
    conf = write_toml(
        tmp_path / "c.toml", access_key_id="FILEKEY", secret_access_key="filesecret", data_dir=str(tmp_path / "f")
    )
    env = {
        "FLEETJOBS_CONFIG": str(conf),
        "FLEETJOBS_ACCESS_KEY_ID": "ENVKEY",
        "FLEETJOBS_SECRET_ACCESS_KEY": "envsecret",
        "FLEETJOBS_DATA_DIR": str(tmp_path / "e"),
    }
    s = Settings.load({}, env={"FLEETJOBS_CONFIG": str(conf)})
    assert (s.access_key_id, s.secret_access_key, s.data_dir) == ("FILEKEY", "filesecret", tmp_path / "f")
    s = Settings.load({}, env=env)
    assert (s.access_key_id, s.secret_access_key, s.data_dir) == ("ENVKEY", "envsecret", tmp_path / "e")
    s = Settings.load(
        {"access_key_id": "FLAGKEY", "secret_access_key": "flagsecret", "data_dir": str(tmp_path / "c")}, env=env
    )
    assert (s.access_key_id, s.secret_access_key, s.data_dir) == ("FLAGKEY", "flagsecret", tmp_path / "c")


def test_config_flag_beats_fleetjobs_config_variable(tmp_path: Path) -> None:
    by_env = write_toml(tmp_path / "env.toml", region="ap-south-1")
    by_flag = write_toml(tmp_path / "flag.toml", region="sa-east-1")
    assert Settings.load({}, env={"FLEETJOBS_CONFIG": str(by_env)}).region == "ap-south-1"
    assert Settings.load({"config": str(by_flag)}, env={"FLEETJOBS_CONFIG": str(by_env)}).region == "sa-east-1"


def test_config_file_accepts_option_spelling_and_expands_home(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('data-dir = "~/fj-data"\ndatabase-url = "postgresql://h/db"\n')
    s = Settings.load({"config": str(conf)}, env={})
    assert s.data_dir == Path.home() / "fj-data"
    assert s.database_url == "postgresql://h/db"


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"port": "http"}, {}, "port must be a number"),
        ({}, {"FLEETJOBS_PORT": "eighty"}, "port must be a number"),
        ({"log_level": "loud"}, {}, "log_level must be one of"),
        ({"access_key_id": "ONLYKEY"}, {}, "set both"),
        ({}, {"FLEETJOBS_SECRET_ACCESS_KEY": "onlysecret"}, "set both"),
    ],
)
def test_invalid_settings_are_refused(flags: dict[str, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.load(flags, env=env)


def test_unknown_file_keys_are_refused(tmp_path: Path) -> None:
    conf = write_toml(tmp_path / "c.toml", port=1, colour="blue")
    with pytest.raises(ValueError, match="unknown setting"):
        Settings.load({"config": str(conf)}, env={})


def test_precedence_end_to_end_file_env_flag(tmp_path: Path) -> None:
    """A real ``fleetjobs serve``: the port comes from the environment over the file, the keys from
    the flags over the environment over the file, the region from the file."""
    file_port, env_port = free_port(), free_port()
    conf = write_toml(
        tmp_path / "fleetjobs.toml",
        port=file_port,
        region="eu-central-1",
        access_key_id="FILEKEY0000000000000",
        secret_access_key="file-secret",
    )
    env = {
        "FLEETJOBS_PORT": str(env_port),
        "FLEETJOBS_ACCESS_KEY_ID": "ENVKEY00000000000000",
        "FLEETJOBS_SECRET_ACCESS_KEY": "env-secret",
    }
    log = tmp_path / "serve.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEETJOBS_")}
    args = [FLEETJOBS, "serve", "--config", str(conf), "--data-dir", str(tmp_path / "data")]
    args += ["--access-key-id", "FLAGKEY0000000000000", "--secret-access-key", "flag-secret"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**base, **env})
    try:
        endpoint = f"http://127.0.0.1:{env_port}"
        wait_healthy(endpoint, proc, 60, log.read_text)
        banner = log.read_text()
        assert f"http://127.0.0.1:{env_port}" in banner and f":{file_port}" not in banner
        good = client_with(endpoint, "FLAGKEY0000000000000", "flag-secret", region="eu-central-1")
        assert good.list_jobs()["ResponseMetadata"]["HTTPStatusCode"] == 200
        for key_id, secret in [("ENVKEY00000000000000", "env-secret"), ("FILEKEY0000000000000", "file-secret")]:
            with pytest.raises(ClientError) as e:
                client_with(endpoint, key_id, secret, region="eu-central-1").list_jobs()
            assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
        assert "region eu-central-1" in banner
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# --- generated keys ----------------------------------------------------------------------------


def test_first_start_generates_keys_prints_them_and_a_second_start_reuses_them(keyless, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = keyless(data_dir)
    creds = data_dir / "credentials.json"
    assert creds.exists()
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    doc = json.loads(creds.read_text())
    banner = first.output()
    assert "generated an access key" in banner and str(creds) in banner
    assert printed_keys(banner) == (doc["accessKeyId"], doc["secretAccessKey"])
    assert doc["accessKeyId"] != ACCESS_KEY_ID and len(doc["secretAccessKey"]) >= 32
    iot = client_with(first.endpoint, doc["accessKeyId"], doc["secretAccessKey"])
    assert iot.list_jobs()["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as e:  # the harness's usual test key is not configured here
        first.client("iot").list_jobs()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    first.stop()

    second = keyless(data_dir)
    assert json.loads(creds.read_text()) == doc
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    banner = second.output()
    assert "generated an access key" not in banner
    # Only a key just made is printed whole; a kept one is the operator's to look up.
    assert doc["accessKeyId"] in banner and doc["secretAccessKey"] not in banner
    iot = client_with(second.endpoint, doc["accessKeyId"], doc["secretAccessKey"])
    assert iot.list_jobs()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_configured_keys_write_no_credentials_file(tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data").start()
    try:
        assert not (tmp_path / "data" / "credentials.json").exists()
        assert "generated" not in srv.output()
        assert ACCESS_KEY_ID in srv.output() and SECRET_ACCESS_KEY not in srv.output()
    finally:
        srv.stop()


def test_instances_starting_together_on_a_fresh_data_dir_agree_on_one_key(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path / "shared")}, env={})
    results: list[Any] = []
    barrier = threading.Barrier(16)

    def start() -> None:
        barrier.wait()
        results.append(resolve_access_key(settings))

    threads = [threading.Thread(target=start) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({(k.access_key_id, k.secret_access_key) for k in results}) == 1
    assert sum(k.generated for k in results) == 1
    doc = json.loads((tmp_path / "shared" / "credentials.json").read_text())
    assert (doc["accessKeyId"], doc["secretAccessKey"]) == (results[0].access_key_id, results[0].secret_access_key)
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["credentials.json"]  # no temp files left


# --- the start banner --------------------------------------------------------------------------


def test_banner_prints_the_endpoint_and_a_boto3_snippet_whose_key_works(keyless) -> None:
    srv = keyless()
    banner = srv.output()
    assert banner.startswith("fleetjobs is running")
    assert srv.endpoint in banner
    snippet = banner_section(banner, "boto3")
    assert "import boto3" in snippet
    assert f"endpoint_url='{srv.endpoint}'" in snippet
    # the client the banner shows, built from the banner's own text, is accepted
    construction = snippet.split("\niot.")[0]
    namespace: dict[str, Any] = {}
    exec(construction, namespace)
    out = namespace["iot"].list_jobs()
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 200 and "jobs" in out
    key_id, secret = printed_keys(banner)
    assert f"aws_access_key_id='{key_id}'" in snippet and f"aws_secret_access_key='{secret}'" in snippet


def test_banner_snippets_run_as_printed(keyless) -> None:
    """Copy, paste, run: the boto3 snippet creates a thing, the AWS CLI line lists it."""
    srv = keyless()
    banner = srv.output()
    namespace: dict[str, Any] = {}
    exec(banner_section(banner, "boto3"), namespace)
    iot = namespace["iot"]
    assert iot.describe_thing(thingName="my-device")["thingName"] == "my-device"

    command = banner_section(banner, "AWS CLI")
    assert "aws iot list-things" in " ".join(command.split()) and f"--endpoint-url {srv.endpoint}" in command
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ISOLATED_ENV}
    env |= {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "my-device" in [t["thingName"] for t in json.loads(out.stdout)["things"]]


def test_a_busy_port_is_an_error_exit(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_cli(
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / unique("d")),
            "--access-key-id",
            ACCESS_KEY_ID,
            "--secret-access-key",
            SECRET_ACCESS_KEY,
        )
    assert out.returncode != 0
    assert "address already in use" in (out.stdout + out.stderr).lower()
