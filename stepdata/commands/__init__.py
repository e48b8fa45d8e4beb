"""The ``stepdata`` subcommands, one module per job; ``cli.py`` only assembles them under ``main``."""
