"""PostgreSQL (psycopg 3) backend for Django, pooled by poolkeeper."""
