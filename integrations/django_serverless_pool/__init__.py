"""Django integration for serverless-pool."""
