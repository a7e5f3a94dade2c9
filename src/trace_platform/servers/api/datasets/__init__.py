"""DatasetService (trace.api.v1): the org's registry, listed, read and named."""
