"""The deduplicated content store: blobs named by their SHA-256, counted references, a sweep.

``store.ContentStore`` is the directory (blocking calls); ``blobs.Blobs`` ties it to the
reference counts in the database (``teamtalk_py.store.content``). The media service keeps
pictures, uploads and avatars here; anything else that stores bytes (the cloud disk) is
meant to use the same two classes.
"""
