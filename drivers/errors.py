"""The base of every expected failure the rig reports to a person."""


class RigError(Exception):
    """An expected failure: the message names what went wrong and how to fix it.

    The CLI prints ``str(error)`` alone, without a traceback. Subclasses live beside the code
    that raises them; upper layers (calibration, recorder, rig) derive from this too.
    """
