"""Pieces every gRPC server shares: error mapping, auth metadata, health, reflection, shutdown."""
