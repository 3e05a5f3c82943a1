"""The one exception type users see: a one-line message naming the file or field."""


class NeurodiffError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


class ImageValuesError(NeurodiffError):
    """The image holds NaN or Inf values (where a lazily read image is found to, callers can name its file)."""
