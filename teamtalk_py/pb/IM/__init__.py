"""Generated ``*_pb2`` modules, one per ``proto/IM.*.proto`` file.

Do not edit: change the ``.proto`` file and run ``python scripts/genproto.py``.
"""
