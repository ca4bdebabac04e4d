"""User-facing errors.

Every problem a user can fix (a bad file, a wrong flag, data a probe cannot use) is raised as a
:class:`FaceprobeError` whose message is one line naming the culprit and the fix. The CLI prints that
line and exits with status 2; anything else is a bug and is reported as such.
"""

from __future__ import annotations


class FaceprobeError(ValueError):
    """A problem with the user's input, described in one line that names the fix."""


class DataError(FaceprobeError):
    """A dataset file is missing or malformed."""


class ProbeInputError(FaceprobeError):
    """The activations or labels given to PLS or a probe cannot be used as they are."""
