"""HTTP adapters: the AWS REST-JSON protocol, driven by botocore's own service models."""
