"""Reusable test harness: a TCP fault proxy, a throwaway PostgreSQL cluster, fixtures."""
