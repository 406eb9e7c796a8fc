"""Names in a run folder (``results/<experiment>/``) that the trainer writes and others read.

The whole layout is in docs/design.md ("The run folder").
"""

COMMANDS_FILE = "commands.txt"  # one line per invocation (the export's model card quotes it)
