"""The contacts extension: friend requests and friendships (docs/EXTENSION.md §2.2)."""
