"""sarchive-web's composition root: the configuration to a served application."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from flask import Flask
from waitress.server import create_server

from query.elastic import open_index
from runtime.config import ConfigError
from runtime.logs import LogReopener, ReopenableFileHandler
from runtime.startup import ConsoleScript, StartupContext, run_console_script
from web.access import AccessRules, unix_groups
from web.app import WebContext, create_app
from web.config import WebConfig
from web.identity import IdentityPolicy
from web.metrics import WebMetrics

log = logging.getLogger(__name__)
SCRIPT = ConsoleScript("sarchive-web", "The archive's pages and JSON API: users find their own"
                       " jobs' scripts, support staff anyone's. Serves behind the site's"
                       " authenticating reverse proxy, which passes the user in a header.")


class WebService:
    """The application served by waitress until SIGTERM or SIGINT; SIGHUP reopens the log
    file (logrotate), as in every service."""

    def __init__(self, app: Flask, config: WebConfig,
                 log_file: ReopenableFileHandler | None) -> None:
        self._app = app
        self._config = config
        self._log_file = log_file

    def run(self) -> int:
        try:
            server = create_server(self._app, host=self._config.listen_address,
                                   port=self._config.port, threads=self._config.threads,
                                   url_prefix=self._config.url_prefix, ident="sarchive-web")
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self._config.listen_address}:"
                              f"{self._config.port}: {exc.strerror or exc}") from exc

        def stop(signum: int, frame: FrameType | None) -> None:
            # waitress's loop ends on SystemExit and then stops its worker threads.
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("sarchive-web serving on http://%s:%d/", self._config.listen_address,
                 self._config.port)
        with LogReopener(self._log_file):
            server.run()
        log.info("sarchive-web stopped")
        return 0


def build(config: WebConfig, startup: StartupContext) -> WebService:
    index = open_index(config)
    rules = AccessRules(
        admin_users=frozenset(config.admin_user), admin_groups=frozenset(config.admin_group),
        coordinators=config.coordinated_accounts())
    # NSS is asked only when a group can make a difference.
    groups_of = unix_groups if config.admin_group else (lambda user: frozenset[str]())
    context = WebContext(
        index=index, identity=IdentityPolicy(config.proxy_networks(), config.dev_user),
        user_header=config.user_header, rules=rules, groups_of=groups_of,
        metrics=WebMetrics(startup.registry), page_size=config.page_size, zone=config.zone())
    return WebService(create_app(context), config, startup.log_file)


def main(argv: Sequence[str] | None = None) -> int:
    return run_console_script(SCRIPT, WebConfig, build, argv)


if __name__ == "__main__":
    sys.exit(main())
