"""Flask extension for serverless-pool."""
