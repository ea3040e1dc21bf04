"""Errors that mean "the user gave bad input": the CLI prints them on one line and exits 2."""


class RcsInputError(ValueError):
    """Bad input from the user: a malformed file, a missing column, an unknown key, a NaN reward.

    The message is one line and names the file, row, field or key at fault. The CLI prints
    ``error: <message>`` and exits with code 2, without a traceback.
    """


def input_error_in(exc: BaseException):
    """The :class:`RcsInputError` inside ``exc`` when that is what failed, else ``None``.

    Work that failed in a Ray actor or task reaches the driver wrapped: Ray's ``RayTaskError`` holds the actor's
    error as ``cause`` (and is itself of a class derived from the cause's, with the actor's traceback as its
    message), and Ray Train's ``TrainingFailedError`` holds its workers' errors in ``worker_failures`` (each wrapped
    with its traceback text). This looks through those wrappers and the ``__cause__`` chain, and returns the user's
    error itself, whose message is one line.
    """
    todo, seen = [exc], set()
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):  # a RayTaskError: its class may derive from RcsInputError, but its
            todo.append(cause)  # message is the actor's traceback; the cause is the error itself
            continue
        if isinstance(err, RcsInputError):
            return err
        todo += list((getattr(err, "worker_failures", None) or {}).values())
        todo += [getattr(err, name, None) for name in ("_base_exc", "controller_failure", "__cause__")]
    return None
