"""The one error type a user can fix; the CLI shows it as a single line."""


class KotaError(Exception):
    """A problem the user can fix (bad config, bad argument, server unreachable).

    Raise it with a message that names the setting and what was wrong; `kota` prints
    `kota: error: <message>` and exits 2, never a traceback.
    """


class ConfigError(KotaError):
    """A bad or missing setting."""
