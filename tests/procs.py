"""The fault tests' name for the one process runner, :mod:`tests.kit.procs` (everything else imports the kit)."""

from tests.kit.procs import *  # noqa: F403
