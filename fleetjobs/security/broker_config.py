"""``fleetjobs broker-config mosquitto``: a Mosquitto 2.0 setup with mutual TLS and per-thing ACLs.

What it writes into one directory (default ``DATA_DIR/mosquitto``):

* ``mosquitto.conf``: one TLS listener that requires a client certificate from the fleetjobs CA,
  no anonymous clients, persistence (so QoS 1 messages queued for persistent sessions, such as
  device requests waiting for fleetjobs, survive a broker restart), the ACL below, and
* ``fleetjobs_client_ids.so``: a plugin compiled here (``fleetjobs.security.mosquitto_plugin``) that
  makes the certificate's CN the MQTT username and refuses a CONNECT whose client id is not the
  device's own thing name, or that uses fleetjobs' reserved ``fleetjobs-...`` ids. Mosquitto's own
  ``use_identity_as_username`` skips every connect-time hook, so with it a device could connect with
  another thing's (or the gateway's) client id and take over that session; see that module;
* ``acl``: a thing may publish and subscribe only under ``$aws/things/<its own name>/``; the
  ``fleetjobs-service`` identity may use all of ``$aws/#`` (requests, responses, notifications,
  events), ``fleetjobs/#`` (between fleetjobs instances, e.g. the bridged requests below; devices cannot
  touch it) and may read ``$SYS/#`` (broker health);
* copies of ``ca.pem``, ``server.pem`` and ``server.key``, and the ``data/`` persistence directory;
* with ``shared_requests`` (``--shared-requests``): a loopback bridge so that several fleetjobs
  instances can share the device traffic (see ``render_shared_requests_bridge``), and a copy of the
  ``fleetjobs-service`` certificate and key it connects with.

Why copies, owned by the broker's user: Mosquitto started as root drops to an unprivileged user
(``user``, by default ``mosquitto``) *before* it opens its certificate, key, ACL and persistence
files, and again when it re-reads them on SIGHUP. The fleetjobs data dir holds the CA's private key
and usually sits in a home directory that user cannot enter; making it readable would expose the CA
key. So the broker gets its own directory with only what it needs, the server key 0600 and every
file owned by the user it will run as, and the config names that user explicitly so the two always
agree. Run as a normal user, the files stay owned by that user and the config names that user:
started by the same user Mosquitto keeps its identity; started by root it drops to that same user.
The directory's ancestors must let that user through; that is checked here, not discovered when
Mosquitto refuses to start.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fleetjobs.security.certs import (
    CA_CERT,
    CERT_MODE,
    KEY_MODE,
    SERVER_NAME,
    SERVICE_IDENTITY,
    certs_dir,
    write_atomic,
)
from fleetjobs.security.mosquitto_plugin import PLUGIN_NAME, RESERVED_PREFIX, PluginBuildError, build_plugin

CONF_NAME = "mosquitto.conf"
ACL_NAME = "acl"
DATA_NAME = "data"
DEFAULT_BROKER_USER = "mosquitto"
# Where the loopback bridge republishes device requests, and how fleetjobs instances subscribe to it.
SHARED_REQUESTS_PREFIX = "fleetjobs/requests/"
BRIDGE_NAME = "fleetjobs-requests"


class BrokerConfigError(Exception):
    """The configuration cannot be written as asked (the CLI prints the message)."""


@dataclass(frozen=True)
class BrokerConfig:
    directory: Path
    conf_path: Path
    acl_path: Path
    user: str
    port: int

    def command(self) -> list[str]:
        return ["mosquitto", "-c", str(self.conf_path)]


def mosquitto_dir(data_dir: Path) -> Path:
    """Default output directory of ``fleetjobs broker-config mosquitto``."""
    return Path(data_dir) / "mosquitto"


def render_acl() -> str:
    """The Mosquitto ACL: things confined to their own topics, fleetjobs allowed every thing's."""
    return f"""\
# Mosquitto ACL written by 'fleetjobs broker-config mosquitto'.
# Usernames are client-certificate CNs (set by the {PLUGIN_NAME} plugin, whatever
# username the client sent): a thing's name, or {SERVICE_IDENTITY} for fleetjobs itself. Anything
# not granted here is denied. Mosquitto 2.0 applies these rules to every publish (write: a denied
# one is dropped; MQTT 5 clients get PUBACK 0x87) and to every delivery, retained messages included
# (read: a message on a topic a client may not read never reaches it, whatever filter it subscribed
# with). It acknowledges every SUBSCRIBE:
# a subscription to another thing's topics is granted but never delivers anything.

# Every client: its own thing's topics only (%u = its username = its certificate CN).
pattern readwrite $aws/things/%u/#

# fleetjobs itself: every thing's job requests, responses and notifications, and $aws/events/...
user {SERVICE_IDENTITY}
topic readwrite $aws/#
# Not used by devices: between fleetjobs instances, e.g. the copy of the device requests that the
# --shared-requests loopback bridge (also {SERVICE_IDENTITY}) writes under fleetjobs/requests/.
topic readwrite fleetjobs/#
# Broker statistics, for health checks.
topic read $SYS/#
"""


def render_mosquitto_conf(directory: Path, port: int, user: str, bind: str | None = None) -> str:
    d = Path(directory)
    listener = f"listener {port} {bind}" if bind else f"listener {port}"
    return f"""\
# Mosquitto 2.0 configuration written by 'fleetjobs broker-config mosquitto' on {datetime.now(UTC):%Y-%m-%d}.
# Start it with: mosquitto -c {d / CONF_NAME}

# Started as root, Mosquitto drops to this user before it opens any file named below; every file
# in {d} is owned by it. (Started as any other user, it keeps that user's identity.)
user {user}
per_listener_settings false

# Mutual TLS: a client must present a certificate issued by the fleetjobs CA.
{listener}
protocol mqtt
cafile {d / CA_CERT}
certfile {d / (SERVER_NAME + ".pem")}
keyfile {d / (SERVER_NAME + ".key")}
tls_version tlsv1.2
require_certificate true
allow_anonymous false
acl_file {d / ACL_NAME}

# Identity and client ids, checked on every CONNECT before Mosquitto looks the client id up (so a
# refused client never disconnects, takes over or wipes anyone's session): the certificate's CN (a
# thing name, or {SERVICE_IDENTITY}) becomes the MQTT username, whatever username the client sends;
# a device must connect with its own thing name as client id; ids starting with {RESERVED_PREFIX} are
# fleetjobs' own ({SERVICE_IDENTITY} only). Do not replace this with use_identity_as_username: with
# it Mosquitto 2.0 calls no plugin at connect time and any client id is accepted.
plugin {d / PLUGIN_NAME}
plugin_opt_service_identity {SERVICE_IDENTITY}
plugin_opt_reserved_prefix {RESERVED_PREFIX}

# Persistent sessions (clean session false / session expiry) and their queued QoS 1 messages are
# kept in {d / DATA_NAME}: saved on shutdown and every 30 s, restored on start, so device requests
# waiting for fleetjobs survive a broker restart.
persistence true
persistence_location {d / DATA_NAME}/
autosave_interval 30
# Requests queued for fleetjobs while it restarts can be many (the default is 1000 per client).
max_queued_messages 100000
# QoS 1 messages a client may have unacknowledged at once (MQTT 3.1.1 clients; an MQTT 5 client's
# own Receive Maximum wins). fleetjobs acknowledges a request only once it is answered, and handles
# the requests that arrive together as one batch: with Mosquitto's default of 20 it would never see
# more than 20 requests at a time, whatever the fleet sends.
max_inflight_messages 1000
# Small request/response messages: send them at once rather than waiting to fill a segment.
set_tcp_nodelay true

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
"""


def render_shared_requests_bridge(directory: Path, port: int, address: str, *, verify_host: bool = True) -> str:
    """A bridge from the broker to itself that copies device requests onto ``fleetjobs/requests/``.

    Mosquitto never delivers ``$``-topics to shared subscriptions (``$share/GROUP/$aws/...`` matches
    nothing), so several fleetjobs instances subscribed to ``$aws/things/+/jobs/#`` would all get, and
    all answer, every request. The bridge subscribes to ``$aws/things/+/jobs/#`` like any client and
    republishes each message as ``fleetjobs/requests/<thing>/jobs/...`` (the same topic with its
    ``$aws/things/`` prefix swapped), which the instances consume through the shared subscription
    ``$share/<group>/fleetjobs/requests/#``: each request reaches exactly one of them. Answers and
    notifications are still published on ``$aws/things/...``. The bridged thing name is the one in
    the device's own topic, which the ACL already confined to the device's certificate, and devices
    cannot publish under ``fleetjobs/`` at all. The copy never loops: the republished topics do not
    match ``$aws/things/+/jobs/#``.
    """
    d = Path(directory)
    insecure = ""
    if not verify_host:
        insecure = "# The server certificate does not name the loopback address: check the chain only.\n"
        insecure += "bridge_insecure true\n"
    return f"""
# Scale-out: several fleetjobs instances share the device requests (fleetjobs serve
# --mqtt-shared-group GROUP, each with its own --mqtt-client-id). This bridge connects the broker to
# itself as {SERVICE_IDENTITY} (through the listener above, so the ACL applies to it) and copies every
# $aws/things/<thing>/jobs/... message to fleetjobs/requests/<thing>/jobs/..., which the instances
# read with the shared subscription $share/GROUP/{SHARED_REQUESTS_PREFIX}#.
connection {BRIDGE_NAME}
address {address}:{port}
bridge_protocol_version mqttv311
remote_clientid {BRIDGE_NAME}
local_clientid {BRIDGE_NAME}-local
# A persistent session on the remote side: requests wait for the bridge if it reconnects.
cleansession false
notifications false
start_type automatic
restart_timeout 1 10
bridge_cafile {d / CA_CERT}
bridge_certfile {d / (SERVICE_IDENTITY + ".pem")}
bridge_keyfile {d / (SERVICE_IDENTITY + ".key")}
bridge_tls_version tlsv1.2
{insecure}topic +/jobs/# in 1 {SHARED_REQUESTS_PREFIX} $aws/things/
"""


def write_mosquitto_config(
    data_dir: Path,
    port: int,
    out_dir: Path | None = None,
    *,
    bind: str | None = None,
    user: str | None = None,
    shared_requests: bool = False,
) -> BrokerConfig:
    """Write the Mosquitto directory for the CA and server certificate in ``data_dir``.

    ``user`` is the account Mosquitto will run as: by default ``mosquitto`` when run as root (the
    distributions' convention), else the invoking user. Only root can hand files to another user.
    """
    if not 1 <= int(port) <= 65535:
        raise BrokerConfigError(f"port must be 1-65535, not {port}")
    src = certs_dir(data_dir)
    sources = {
        CA_CERT: (src / CA_CERT, CERT_MODE, "run 'fleetjobs certs init'"),
        SERVER_NAME + ".pem": (src / (SERVER_NAME + ".pem"), CERT_MODE, "run 'fleetjobs certs server'"),
        SERVER_NAME + ".key": (src / (SERVER_NAME + ".key"), KEY_MODE, "run 'fleetjobs certs server'"),
    }
    if shared_requests:
        hint = "run 'fleetjobs certs service'"
        sources[SERVICE_IDENTITY + ".pem"] = (src / (SERVICE_IDENTITY + ".pem"), CERT_MODE, hint)
        sources[SERVICE_IDENTITY + ".key"] = (src / (SERVICE_IDENTITY + ".key"), KEY_MODE, hint)
    for path, _, hint in sources.values():
        if not path.exists():
            raise BrokerConfigError(f"{path} does not exist: {hint} first")

    euid = os.geteuid()
    if user is None:
        user = DEFAULT_BROKER_USER if euid == 0 else pwd.getpwuid(euid).pw_name
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise BrokerConfigError(f"no such user {user!r} to run mosquitto as (use --user)") from None
    if euid != 0 and pw.pw_uid != euid:
        raise BrokerConfigError(
            f"only root can give the broker's files to user {user!r}: run this as root, or pass --user "
            f"{pwd.getpwuid(euid).pw_name} and run mosquitto as that user"
        )

    try:
        plugin = build_plugin()  # before anything is written: no compiler, no configuration
    except PluginBuildError as exc:
        raise BrokerConfigError(str(exc)) from None

    directory = (Path(out_dir) if out_dir else mosquitto_dir(data_dir)).absolute()
    data = directory / DATA_NAME
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    data.mkdir(mode=0o700, exist_ok=True)
    _check_reachable(directory, pw)

    written: list[Path] = [directory, data]
    for name, (path, mode, _) in sources.items():
        write_atomic(directory / name, path.read_bytes(), mode)
        written.append(directory / name)
    write_atomic(directory / PLUGIN_NAME, plugin, 0o644)
    written.append(directory / PLUGIN_NAME)
    acl_path, conf_path = directory / ACL_NAME, directory / CONF_NAME
    write_atomic(acl_path, render_acl().encode(), 0o644)
    conf = render_mosquitto_conf(directory, int(port), user, bind)
    if shared_requests:
        address, verify = _bridge_address(src / (SERVER_NAME + ".pem"), bind)
        conf += render_shared_requests_bridge(directory, int(port), address, verify_host=verify)
    write_atomic(conf_path, conf.encode(), 0o644)
    written += [acl_path, conf_path]
    if euid == 0:
        for p in written:
            os.chown(p, pw.pw_uid, pw.pw_gid)
    os.chmod(directory, 0o700)
    os.chmod(data, 0o700)
    return BrokerConfig(directory, conf_path, acl_path, user, int(port))


def _check_reachable(directory: Path, pw: pwd.struct_passwd) -> None:
    """Fail now if the broker's user could not get to ``directory`` (Mosquitto would fail later)."""
    if pw.pw_uid == 0:
        return
    groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    for ancestor in directory.resolve().parents:
        st = ancestor.stat()
        if st.st_uid == pw.pw_uid:
            allowed = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            allowed = bool(st.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(st.st_mode & stat.S_IXOTH)
        if not allowed:
            raise BrokerConfigError(
                f"mosquitto, running as user {pw.pw_name!r}, could not reach {directory}: {ancestor} "
                f"(mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid}) does not let it through. "
                "Choose another --out directory (e.g. /etc/mosquitto/fleetjobs), "
                "or let it through with chmod o+x or a group."
            )


def _bridge_address(server_cert: Path, bind: str | None) -> tuple[str, bool]:
    """Where the loopback bridge connects, and whether the server certificate names that address."""
    from cryptography import x509

    address = "127.0.0.1" if bind in (None, "", "0.0.0.0", "::") else bind
    cert = x509.load_pem_x509_certificate(server_cert.read_bytes())
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return address, False
    names = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} | set(sans.get_values_for_type(x509.DNSName))
    if address in names:
        return address, True
    if address == "127.0.0.1" and "localhost" in names:
        return "localhost", True
    return address, False
