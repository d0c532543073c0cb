"""The ``poolkeeper`` command line: ``bench``, ``tune`` and ``check``.

Run ``poolkeeper --help``, or ``python -m poolkeeper.cli``. The command line
needs the ``cli`` extra (``pip install 'poolkeeper[cli]'``) for progress bars,
tables and plots; without it, output falls back to plain text and ``--plot``
is refused. Importing :mod:`poolkeeper` never imports this package.
"""
