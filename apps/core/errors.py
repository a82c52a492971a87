"""Errors raised by service functions; the API and the peer service map them to answers."""


class ServiceError(Exception):
    """Bad input or a refused action: the API answers 400 with this message."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, object]:
        if self.field:
            return {self.field: [self.message]}
        return {"detail": self.message, "code": self.code}


class IllegalTransition(ServiceError):
    """A state machine refused a move (e.g. approving a withdrawn ticket)."""

    status_code = 409
    code = "illegal_transition"


class Conflict(ServiceError):
    """Someone else changed the object first (compare-and-set lost)."""

    status_code = 409
    code = "conflict"


class Forbidden(ServiceError):
    """The acting user's role may not do this."""

    status_code = 403
    code = "forbidden"


class Unavailable(ServiceError):
    """A service this answer depends on is down or too slow (the partner's serving runtime): try again later."""

    status_code = 503
    code = "unavailable"


class NotFound(ServiceError):
    """The thing named does not exist here (or is not this workspace's): the API answers 404."""

    status_code = 404
    code = "not_found"
