"""Errors that stop the agent from starting, each with a message a technician can act on."""


class StartupError(Exception):
    """The agent cannot start; the message says what is wrong and what to check."""
