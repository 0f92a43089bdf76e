"""``ENGINE = "django_serverless_pool.backends.postgresql"``: Django's PostgreSQL backend
taking its connections from a `serverless_pool.ServerlessPool`."""
