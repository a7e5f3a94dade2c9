"""Extractors that pull chain data into staged Parquet files (Cryo)."""
