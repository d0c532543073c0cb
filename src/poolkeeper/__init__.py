"""poolkeeper: a fast, reliable, observable database connection pool."""
