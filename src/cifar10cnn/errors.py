"""The one error type for mistakes a user can cause (bad flags, missing data, foreign files).

`cli.main` catches it once and prints its message as a single line with exit status 2.
"""


class UserError(Exception):
    """A problem the user can fix; the message is shown as-is, without a traceback."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
