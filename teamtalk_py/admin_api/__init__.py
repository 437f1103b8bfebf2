"""The admin REST API (``/admin/api/v1/``) and the listener that also serves the web
console (``/admin/``): ``routes.py`` is the table, ``handlers.py`` the HTTP side,
``directory.py`` the logic, ``auth.py`` who may call, ``live.py`` the running server."""
