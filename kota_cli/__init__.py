"""The `kota` command line: a thin root that loads each component's click group lazily.

Owns: the root group, error formatting (one clear line, no traceback), and the registry of
sub-command groups. Each component keeps its own commands in `<component>/cli.py`, exposing
a `click.Group` named `group` (or a `click.Command` named `command`).

May import: click and the standard library only at import time. Component modules are imported
only when their sub-command runs, so `kota edge ...` works on a Raspberry Pi that has no
server-side packages installed.
"""
