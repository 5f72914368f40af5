"""errors - the authoring part's exception types."""
from ..errors import LabError


class AuthoringError(LabError):
    """A diff, a source tree or a build the authoring tools cannot work with."""
