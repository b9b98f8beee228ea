"""The application layer: every command happens in exactly one place here.

Façades (one class per AWS resource family) answer the operations; both adapters (HTTP and MQTT)
call them with the model's request shapes and get AWS-shaped dicts back.  What a change does inside
its transaction lives in ``effects`` (each effect imports only effects below it); what any instance
does in the background lives in ``loops``.
"""
