"""DagService of the user API: deploy DAG versions, list them, activate and roll back."""
