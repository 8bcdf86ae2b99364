"""The one exception for bad input: it names the file and the reason, so it prints in one line."""


class BadInputError(Exception):
  """A source file that cannot be converted. Printed as `<path>: <reason>`, never a traceback."""

  def __init__(self, path, reason, bad_files=()):
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.reason = reason
    # Other bad files of the same patient found before this error: listed one by one, so a
    # user learns which files to replace even when the whole patient is skipped.
    self.bad_files = tuple(bad_files)

  def to_json(self):
    return {"file": self.path, "reason": self.reason}

  def __reduce__(self):  # survives pickling across worker processes
    return (BadInputError, (self.path, self.reason, self.bad_files))
