"""Errors that the CLI turns into a one-line message and a non-zero exit."""


class CloudirError(Exception):
    """An expected failure with a message a responder can act on."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class TargetNotFoundError(CloudirError):
    """The named instance, VM, key or principal does not exist where we looked."""


class CloudAccessError(CloudirError):
    """Missing credentials, access denied, or a cloud API refusing a call."""


class CapabilityNotSupportedError(CloudirError):
    """The provider cannot do what was asked; it says so instead of faking it."""


class StepFailedError(CloudirError):
    """A plan step failed; later destructive steps were not run."""

    exit_code = 3


class PreconditionError(CloudirError):
    """An ordering rule was not met (for example: contain before a successful acquisition)."""
