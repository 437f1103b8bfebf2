"""msg service: client TCP connections, login, presence, buddy lists and messages."""
