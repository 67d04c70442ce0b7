"""CLI room: the `egide` command, one module per command group.

Every command turns an expected error into a one-line message on stderr and a non-zero exit;
never a stack trace. Output meant for scripts (a token) goes alone to stdout.
"""
