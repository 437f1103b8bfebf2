"""One module per benchmark scenario.

Each module has ``add_arguments(parser)``, ``users_needed(params)``, ``worker_count(params,
requested)``, ``coordinate(run)`` (runs in the parent, drives the phases and returns the
results) and ``async worker(ctx)`` (runs in every client process). A module with
``run(params, args)`` starts and stops its own servers instead (``cluster``, which needs
MariaDB and Redis and is therefore not part of ``all``; ``rooms`` too).
"""

SCENARIOS = ("msg", "ping", "login", "idle", "group", "file", "media", "disk", "flood")
STANDALONE = ("cluster", "push", "rooms")
