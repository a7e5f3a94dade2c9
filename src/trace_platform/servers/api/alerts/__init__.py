"""AlertService (trace.api.v1): alert definitions, their events and deliveries."""
