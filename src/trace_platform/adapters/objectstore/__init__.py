"""Object stores behind one small interface: a local directory (Lite) and any S3 API."""
