"""Query Service: gated SQL over pinned Parquet dataset versions."""
