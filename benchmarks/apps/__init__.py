"""Real applications under load: see ``benchmarks/apps/run.py``."""
