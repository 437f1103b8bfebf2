"""login service: tells clients which msg node to use (HTTP ``/msg_server``)."""
