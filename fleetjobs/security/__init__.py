"""Device-plane security: fleetjobs' own certificate authority and broker configurations.

Devices authenticate to the MQTT broker with X.509 client certificates whose subject CN is their
thing name; the broker turns that CN into the MQTT username and an ACL keyed on the username keeps
each thing under ``$aws/things/<its own name>/``.
"""
