class DataError(Exception):
    """A dataset cannot be found or read; the message is one line naming the file and the fix."""
