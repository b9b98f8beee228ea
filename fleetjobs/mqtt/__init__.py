"""The device plane over MQTT: the AWS IoT Jobs topics, on an embedded or external broker."""
