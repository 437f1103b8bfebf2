"""The benchmark harness: ``python -m teamtalk_bench SCENARIO …``.

It measures a TeamTalk msg server from the outside, over loopback: either a throwaway
``twistd teamtalk`` it starts itself (own data dir, own ports, its own users), or any
running TeamTalk-compatible server found by its discovery URL, so the same figures can be
taken against another implementation.

Layout:

- ``server``: the throwaway server, discovery of an existing one, ``/proc`` readings of the
  server process (RSS, CPU, fds) and the optional py-spy profile.
- ``workers``: client worker processes, each with its own reactor, and the phase barrier
  the parent uses to drive them; results come back as raw lists and are merged.
- ``conn``: a lean client connection for load generation (callbacks, no Deferred per
  message), framed with ``teamtalk_client``'s header codec, never the server's.
- ``stats``: percentiles, rates, client CPU, the human table and the JSON file.
- ``scenarios``: one module per scenario (msg, ping, login, idle, group, file).
"""
