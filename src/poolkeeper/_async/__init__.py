"""Hand-written asyncio shells: the source the sync twins in ``_sync/`` are generated from."""
