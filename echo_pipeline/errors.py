"""User-facing errors.

Every problem a user can cause (bad input, a missing style, an unreadable store) is raised as an
`EchoError` subclass carrying a one-line message; the CLI prints it and exits with code 2, the API
turns it into a 4xx JSON body. Anything else is a bug and keeps its traceback.
"""


class EchoError(Exception):
    """Base class: a one-line, user-facing problem."""

    def __init__(self, message: str):
        # Keep messages to one line so CLI output and JSON bodies stay readable.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class InvalidInputError(EchoError, ValueError):
    """A request, prompt, size, count or name that cannot be used."""


class NotFoundError(EchoError, LookupError):
    """A style, artifact, project or backend that does not exist."""


class StorageError(EchoError, OSError):
    """The artifact root cannot be used, or something stored there is damaged."""


class BackendUnavailableError(EchoError, RuntimeError):
    """A backend that cannot run here (not installed, no API, no server)."""


class ProjectBusyError(EchoError, RuntimeError):
    """Another run is writing the same project right now."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a run; what was stored is kept and the next run resumes (exit 130)."""
