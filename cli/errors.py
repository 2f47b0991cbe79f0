"""The one error type commands raise for problems the user can act on."""


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 2."""
