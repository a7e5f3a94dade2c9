"""BundleService of the user API: upload, finalize, list and get signed UDF bundles."""
