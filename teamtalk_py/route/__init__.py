"""route service: links msg nodes and forwards what must reach users on other nodes."""
