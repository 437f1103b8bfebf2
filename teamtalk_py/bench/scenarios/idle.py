"""idle: (being written)."""
def add_arguments(parser): pass
