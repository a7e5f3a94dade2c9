"""The trusted buffer sink for alert_events and its dead-letter RPCs."""
