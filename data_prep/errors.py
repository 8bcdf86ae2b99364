"""The one exception for bad input: it names the file and the reason, so it prints in one line."""


class BadInputError(Exception):
  """A source file that cannot be converted. Printed as `<path>: <reason>`, never a traceback."""

  def __init__(self, path, reason):
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.reason = reason

  def to_json(self):
    return {"file": self.path, "reason": self.reason}

  def __reduce__(self):  # survives pickling across worker processes
    return (BadInputError, (self.path, self.reason))
