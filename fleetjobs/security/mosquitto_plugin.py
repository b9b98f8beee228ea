"""A Mosquitto 2.0 plugin, compiled by ``fleetjobs broker-config mosquitto``, that binds client ids to certificates.

Why a plugin: with ``use_identity_as_username`` Mosquitto 2.0.11 takes the username from the certificate CN and then
skips every authentication hook ("Authentication assumed to be cleared", src/handle_connect.c: neither
``mosquitto_unpwd_check`` nor any ``MOSQ_EVT_BASIC_AUTH`` callback runs), so nothing looks at the client id before
``connect__on_authorised`` disconnects the connection already using that id and takes over (or, with a clean
session, wipes) its session. ACL patterns on ``%c`` only restrict topics *after* that takeover. The dynamic-security
plugin's per-client ``clientid`` is checked in its basic-auth callback, only for clients that send a username *and*
a password (plugins/dynamic-security/auth.c), so it does not apply to certificate identities either. 2.0.11 has no
connect event for plugins (``MOSQ_EVT_CONNECT`` arrived in 2.1).

So the generated configuration drops ``use_identity_as_username`` (``require_certificate`` still makes the TLS
handshake verify the chain against the fleetjobs CA) and loads this plugin, whose ``MOSQ_EVT_BASIC_AUTH`` callback
Mosquitto then calls for every CONNECT, *before* it looks the client id up. The callback reads the verified
certificate's CN (``mosquitto_client_certificate``), makes it the username (``mosquitto_set_username``: the ACL file
keeps keying on ``%u`` / ``user fleetjobs-service``, whatever username the client sent) and refuses the CONNECT
(CONNACK "not authorized") unless:

* the CN is the service identity (``fleetjobs-service``: fleetjobs' gateways and the loopback bridge, which pick
  their own client ids), or
* the CN is a thing name that does not start with the reserved prefix (``fleetjobs-``, which holds fleetjobs' own
  ids: ``fleetjobs-gateway``, ``fleetjobs-requests``, ``fleetjobs-requests-local``, ``fleetjobs-<host>``) and the
  client id is exactly that thing name.

MQTT 5 enhanced authentication (an Authentication Method in CONNECT) would take a different path,
``mosquitto_security_auth_start``; no plugin answers it, so Mosquitto refuses such a CONNECT ("bad authentication
method") and it cannot be used to get around the check.

Why the source lives in a Python string and is compiled by ``broker-config``: Mosquitto's and OpenSSL's development
headers are usually not installed (``mosquitto-dev``, ``libssl-dev``), and the plugin must match the machine's
Mosquitto. The few declarations it needs are written out below; they are Mosquitto 2.0's stable plugin ABI
(``MOSQ_PLUGIN_VERSION`` 5, include/mosquitto_broker.h, include/mosquitto_plugin.h) and OpenSSL 1.1/3's X509 calls.
The shared object is not linked against either library: ``mosquitto`` exports its plugin functions and already
loads libcrypto, and it loads plugins with ``RTLD_NOW | RTLD_GLOBAL`` (src/lib_load.h), so every symbol resolves
at load time or Mosquitto refuses to start, which fails closed. A string in a module also ships with every install,
unlike a data file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PLUGIN_NAME = "fleetjobs_client_ids.so"
RESERVED_PREFIX = "fleetjobs-"
"""Client ids (and CNs) under this prefix belong to fleetjobs itself: no device certificate may connect with one."""

PLUGIN_SOURCE = r"""
/* fleetjobs: bind MQTT client ids to client-certificate CNs (Mosquitto 2.0 plugin, version 5 ABI).
 * Written by 'fleetjobs broker-config mosquitto'; see fleetjobs/security/mosquitto_plugin.py. */
#include <stddef.h>
#include <string.h>

/* Mosquitto 2.0 (include/mosquitto.h, mosquitto_broker.h, mosquitto_plugin.h) */
#define MOSQ_ERR_SUCCESS 0
#define MOSQ_ERR_INVAL 3
#define MOSQ_ERR_AUTH 11
#define MOSQ_EVT_BASIC_AUTH 3
#define MOSQ_LOG_NOTICE (1 << 1)
#define MOSQ_LOG_WARNING (1 << 2)
struct mosquitto;
typedef struct mosquitto_plugin_id_t mosquitto_plugin_id_t;
struct mosquitto_opt { char *key; char *value; };
struct mosquitto_evt_basic_auth {
	void *future; struct mosquitto *client; char *username; char *password; void *future2[4];
};
typedef int (*MOSQ_FUNC_generic_callback)(int, void *, void *);
int mosquitto_callback_register(mosquitto_plugin_id_t *, int, MOSQ_FUNC_generic_callback, const void *, void *);
int mosquitto_callback_unregister(mosquitto_plugin_id_t *, int, MOSQ_FUNC_generic_callback, const void *);
void mosquitto_log_printf(int level, const char *fmt, ...);
const char *mosquitto_client_id(const struct mosquitto *client);
const char *mosquitto_client_address(const struct mosquitto *client);
void *mosquitto_client_certificate(const struct mosquitto *client);
int mosquitto_set_username(struct mosquitto *client, const char *username);

/* OpenSSL 1.1 / 3 (already loaded by mosquitto) */
#define NID_commonName 13
typedef struct x509_st X509;
typedef struct X509_name_st X509_NAME;
typedef struct X509_name_entry_st X509_NAME_ENTRY;
typedef struct asn1_string_st ASN1_STRING;
X509_NAME *X509_get_subject_name(const X509 *x);
int X509_NAME_get_index_by_NID(const X509_NAME *name, int nid, int lastpos);
X509_NAME_ENTRY *X509_NAME_get_entry(const X509_NAME *name, int loc);
ASN1_STRING *X509_NAME_ENTRY_get_data(const X509_NAME_ENTRY *ne);
const unsigned char *ASN1_STRING_get0_data(const ASN1_STRING *x);
int ASN1_STRING_length(const ASN1_STRING *x);
void X509_free(X509 *a);

#define MAX_NAME 128 /* AWS's longest thing name */

static mosquitto_plugin_id_t *plugin_id;
static char service_identity[MAX_NAME + 1] = "fleetjobs-service";
static char reserved_prefix[MAX_NAME + 1] = "fleetjobs-";

/* The certificate's single CN into out (NUL-terminated); 0 if there is no certificate, no CN, more than one CN,
 * an embedded NUL or a CN longer than MAX_NAME. */
static int certificate_cn(struct mosquitto *client, char *out)
{
	X509 *cert = mosquitto_client_certificate(client); /* a new reference: freed below */
	int ok = 0;
	if(cert){
		X509_NAME *name = X509_get_subject_name(cert);
		int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
		if(i >= 0 && X509_NAME_get_index_by_NID(name, NID_commonName, i) < 0){
			ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
			const unsigned char *bytes = data ? ASN1_STRING_get0_data(data) : NULL;
			int len = data ? ASN1_STRING_length(data) : -1;
			if(bytes && len > 0 && len <= MAX_NAME && memchr(bytes, 0, (size_t)len) == NULL){
				memcpy(out, bytes, (size_t)len);
				out[len] = '\0';
				ok = 1;
			}
		}
		X509_free(cert);
	}
	return ok;
}

/* AWS's thing-name pattern [a-zA-Z0-9:_-]+, the only CNs fleetjobs issues to devices. */
static int is_thing_name(const char *s)
{
	if(!*s) return 0;
	for(; *s; s++){
		char c = *s;
		int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if(!alnum && c != ':' && c != '_' && c != '-'){
			return 0;
		}
	}
	return 1;
}

static int refuse(struct mosquitto *client, const char *cn, const char *why)
{
	const char *id = mosquitto_client_id(client);
	const char *address = mosquitto_client_address(client);
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "fleetjobs: refused client '%s' from %s (certificate CN '%s'): %s",
			id ? id : "", address ? address : "?", cn ? cn : "", why);
	return MOSQ_ERR_AUTH;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	char cn[MAX_NAME + 1];
	const char *id;
	(void)event;
	(void)userdata;

	if(!certificate_cn(ed->client, cn)){
		return refuse(ed->client, NULL, "no single usable CN in the client certificate");
	}
	id = mosquitto_client_id(ed->client);
	if(strcmp(cn, service_identity) != 0){
		if(!is_thing_name(cn)){
			return refuse(ed->client, cn, "the CN is not a thing name");
		}
		if(strncmp(cn, reserved_prefix, strlen(reserved_prefix)) == 0){
			return refuse(ed->client, cn, "names under the reserved prefix are fleetjobs' own client ids");
		}
		if(id == NULL || strcmp(id, cn) != 0){
			return refuse(ed->client, cn, "a device's client id must be its thing name");
		}
	}
	/* The identity the ACL sees (%u, 'user ...'), whatever username the client sent. */
	if(mosquitto_set_username(ed->client, cn) != MOSQ_ERR_SUCCESS){
		return refuse(ed->client, cn, "could not set the username");
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

static int set_option(char *dest, const char *value)
{
	if(value == NULL || strlen(value) > MAX_NAME) return MOSQ_ERR_INVAL;
	strcpy(dest, value);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int i;
	(void)userdata;
	for(i = 0; i < option_count; i++){
		int rc = MOSQ_ERR_SUCCESS;
		if(strcmp(options[i].key, "service_identity") == 0){
			rc = set_option(service_identity, options[i].value);
		}else if(strcmp(options[i].key, "reserved_prefix") == 0){
			rc = set_option(reserved_prefix, options[i].value);
		}
		if(rc != MOSQ_ERR_SUCCESS){
			mosquitto_log_printf(MOSQ_LOG_WARNING, "fleetjobs: invalid plugin_opt_%s", options[i].key);
			return rc;
		}
	}
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
}
"""


class PluginBuildError(Exception):
    """The plugin could not be compiled (no C compiler, or the compiler failed); the message says which."""


def compiler() -> str | None:
    """The C compiler to use: ``$CC`` if set, else ``cc`` or ``gcc`` on the PATH."""
    cc = os.environ.get("CC")
    if cc:
        return cc
    return shutil.which("cc") or shutil.which("gcc")


def build_plugin() -> bytes:
    """Compile :data:`PLUGIN_SOURCE` and return the shared object (the caller writes it, atomically, for the broker).

    Fails with :class:`PluginBuildError` rather than writing a configuration without the check: a broker that let
    devices take each other's client ids would look identical until someone used it.
    """
    cc = compiler()
    if cc is None:
        raise PluginBuildError(
            "no C compiler found (set CC, or install gcc): the Mosquitto configuration needs fleetjobs' client-id "
            "plugin, which is compiled on this machine"
        )
    with tempfile.TemporaryDirectory(prefix="fleetjobs-plugin-") as tmp:
        src = Path(tmp) / "fleetjobs_client_ids.c"
        built = Path(tmp) / PLUGIN_NAME
        src.write_text(PLUGIN_SOURCE)
        cmd = [cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(built), str(src)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except OSError as exc:
            raise PluginBuildError(f"could not run the C compiler {cc!r}: {exc}") from None
        if result.returncode != 0:
            raise PluginBuildError(f"compiling the client-id plugin failed ({' '.join(cmd)}):\n{result.stderr}")
        return built.read_bytes()
