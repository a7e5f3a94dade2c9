"""AWS adapters through aiobotocore: the SQS wake-up queue's client and STS scoped credentials."""
