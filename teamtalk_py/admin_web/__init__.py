"""The admin web console: static assets in ``static/``, served at ``/admin/`` by the admin
listener (``teamtalk_py/admin_api/static.py``). It talks to the admin REST API only."""
