"""The application layer: every command happens in exactly one place here.

The HTTP adapter (and, later, the MQTT gateway and the scheduler) call these services; they
take and return AWS-shaped dicts (camelCase member names from the botocore model) so that the
adapters stay thin.
"""
