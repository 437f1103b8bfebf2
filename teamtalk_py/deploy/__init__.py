"""Deployment files shipped with the package: an example config (``teamtalk.toml``), the
hardened systemd unit (``teamtalk.service``) and its sysusers.d entry
(``teamtalk.sysusers``). ``teamtalk-admin example config|unit|sysusers`` prints them."""
