"""Exit codes of every sarchive console script, as systemd units rely on them.

A unit's `RestartPreventExitStatus=2` stops the restart loop on a configuration error, which
restarting cannot fix; a fatal runtime error (1) is worth a restart.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
