"""The Delivery Service: leases alert_deliveries and sends them."""
