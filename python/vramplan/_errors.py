"""The one error of the Python API."""


class ConfigError(ValueError):
    """Bad input: the message is the CLI's one line (it names the file, line or key and what
    was expected); ``key`` is the config key at fault where one is known, else None."""

    def __init__(self, message, key=None):
        super().__init__(message)
        self.message = message
        self.key = key
