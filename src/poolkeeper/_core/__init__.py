"""The sans-I/O pool core: state, decisions and statistics, shared by both shells.

Nothing in this package imports threading, asyncio or any driver, and nothing
here sleeps: the shells take a lock, call a method that updates the state and
returns what to do, then do it (connect, close, wake a waiter) with the lock
released.
"""
