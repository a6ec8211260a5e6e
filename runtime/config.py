"""One typed configuration per service, built from flags, environment, a TOML file and defaults.

A service declares its settings once, as a frozen dataclass whose fields carry `setting(...)`
metadata; `load_config` derives the command line, the `SARCHIVE_<NAME>` environment variables
and the TOML keys from it. Precedence: flag > environment > file > default.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from schemas.version import VERSION

ENV_PREFIX = "SARCHIVE_"
MASK = "********"

ConfigT = TypeVar("ConfigT")


class ConfigError(Exception):
    """The configuration is invalid: a fatal error reported before the service starts."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: Sequence[str] | None = None,
    secret: bool = False,
    required: bool = False,
    short: str | None = None,
) -> Any:
    """A dataclass field that is also a command line flag, an environment variable and a key."""
    metadata = {"help": help, "choices": choices, "secret": secret, "required": required,
                "short": short}
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple as the default of a repeatable setting")
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class _Option:
    name: str
    kind: type
    optional: bool
    repeated: bool
    field: dataclasses.Field[Any]

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _options(config_type: type[Any]) -> list[_Option]:
    hints = typing.get_type_hints(config_type)
    options: list[_Option] = []
    for f in dataclasses.fields(config_type):
        if "help" not in f.metadata:
            continue
        hint = hints[f.name]
        optional = False
        repeated = False
        args = typing.get_args(hint)
        if typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in args:
            optional = True
            hint = next(a for a in args if a is not type(None))
        if typing.get_origin(hint) is tuple:
            repeated = True
            hint = typing.get_args(hint)[0]
        options.append(_Option(f.name, hint, optional, repeated, f))
    return options


def _convert(option: _Option, raw: Any, source: str) -> Any:
    if option.repeated:
        if isinstance(raw, str):
            items: list[Any] = [p for p in (s.strip() for s in raw.split(",")) if p]
        elif isinstance(raw, Mapping):
            items = [f"{k}={v}" for k, v in raw.items()]
        elif isinstance(raw, list | tuple):
            items = list(raw)
        else:
            raise ConfigError(f"{option.name} from {source}: expected a list, got {raw!r}")
        return tuple(_convert_one(option, item, source) for item in items)
    return _convert_one(option, raw, source)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert_one(option: _Option, raw: Any, source: str) -> Any:  # noqa: PLR0911 -- one return per setting type reads plainer than a dispatch table
    kind = option.kind
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if kind is int:
            if isinstance(raw, bool):
                raise ValueError(f"not an integer: {raw!r}")
            return int(str(raw), 0) if isinstance(raw, str) else int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(str(raw)).expanduser()
        value = str(raw)
    except ValueError as exc:
        raise ConfigError(f"{option.name} from {source}: {exc}") from exc
    choices = option.field.metadata["choices"]
    if choices is not None and value not in choices:
        raise ConfigError(f"{option.name} from {source}: {value!r} is not one of {list(choices)}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors are configuration errors: one line and exit status 2 from the start-up
    path, like every other bad setting."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(message)


def build_parser(config_type: type[Any], prog: str, description: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog, description=description,
        # --broker must not silently mean --brokers, nor a future flag's prefix an old one.
        allow_abbrev=False,
        epilog=SETTINGS_EPILOG,
    )
    _add_version(parser)
    add_setting_arguments(parser, config_type)
    return parser


def _add_version(parser: argparse.ArgumentParser) -> None:
    # The installed distribution's version: what a package (wheel, RPM, image) holds.
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")


SETTINGS_EPILOG = (f"Every setting can also be given as {ENV_PREFIX}<NAME> in the environment"
                   " (dashes as underscores) or as <name> in the --config TOML file;"
                   " precedence: flag > environment > file > default.")


def usage_parser(**kwargs: Any) -> argparse.ArgumentParser:
    """An argument parser whose usage errors raise ConfigError (one line, exit 2), for
    command-line tools that add their own arguments and subcommands (sarchive)."""
    parser = _Parser(allow_abbrev=False, **kwargs)
    _add_version(parser)
    return parser


def add_setting_arguments(parser: argparse.ArgumentParser, config_type: type[Any]) -> None:
    """--config and one flag per setting of config_type (on a parser or a subcommand's)."""
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML configuration file (keys are the setting names, - or _)")
    for option in _options(config_type):
        meta = option.field.metadata
        default = option.field.default
        help_text = meta["help"]
        if meta["secret"]:
            help_text += " (secret: masked in logs)"
        elif default not in (dataclasses.MISSING, None, (), ""):
            help_text += f" (default: {default})"
        names = [option.flag] + ([meta["short"]] if meta["short"] else [])
        # Flags default to None so that "not given" is told apart from an explicit value.
        if option.kind is bool and not option.repeated:
            parser.add_argument(*names, dest=option.name, default=None, help=help_text,
                                action=argparse.BooleanOptionalAction)
        elif option.repeated:
            parser.add_argument(*names, dest=option.name, default=None, help=help_text,
                                action="append", metavar=option.name.upper())
        else:
            parser.add_argument(*names, dest=option.name, default=None, help=help_text,
                                metavar=option.name.upper(), choices=meta["choices"])


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return {key.replace("-", "_"): value for key, value in data.items()}


def load_config(
    config_type: type[ConfigT],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    environ: Mapping[str, str] | None = None,
) -> ConfigT:
    """Parse argv (None: sys.argv[1:]) and the environment into a validated config_type."""
    parser = build_parser(config_type, prog, description)
    return config_from_arguments(config_type, parser.parse_args(argv), environ)


def config_from_arguments(config_type: type[ConfigT], args: argparse.Namespace,
                          environ: Mapping[str, str] | None = None) -> ConfigT:
    """A validated config_type from parsed flags (add_setting_arguments), the environment
    and the TOML file; other attributes of args are ignored."""
    environ = os.environ if environ is None else environ
    config_file = args.config or (Path(environ[ENV_PREFIX + "CONFIG"])
                                  if ENV_PREFIX + "CONFIG" in environ else None)
    file_values = _read_toml(config_file) if config_file else {}
    options = _options(config_type)
    known = {o.name for o in options}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"unknown settings in {config_file}: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for option in options:
        flag_value = getattr(args, option.name)
        if flag_value is not None:
            # A repeated flag gives one item per use (no comma splitting: regexes have commas).
            values[option.name] = _convert(option, flag_value, option.flag)
        elif option.env_var in environ:
            values[option.name] = _convert(option, environ[option.env_var], option.env_var)
        elif option.name in file_values:
            values[option.name] = _convert(option, file_values[option.name], str(config_file))
        elif option.field.metadata["required"]:
            raise ConfigError(f"{option.name} is required: give {option.flag},"
                              f" {option.env_var} or '{option.name}' in the config file")
    try:
        return config_type(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def unknown_environment(config_type: type[Any], environ: Mapping[str, str] | None = None,
                        ) -> list[tuple[str, str | None]]:
    """The SARCHIVE_* variables that name no setting of config_type, each with the closest
    setting's variable if one is close (SARCHIVE_BROKER: SARCHIVE_BROKERS): a misspelt
    variable otherwise leaves a default in force without a word."""
    environ = os.environ if environ is None else environ
    known = [option.env_var for option in _options(config_type)] + [ENV_PREFIX + "CONFIG"]
    unknown = sorted(name for name in environ if name.startswith(ENV_PREFIX)
                     and name not in known)
    return [(name, next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.85)), None))
            for name in unknown]


def unknown_variable_text(variable: str, suggestion: str | None, prog: str | None = None) -> str:
    """How an unknown SARCHIVE_* variable is reported (unknown_environment's pairs), naming
    the program it is unknown to, if given, and the setting it likely meant."""
    of = f" of {prog}" if prog else ""
    hint = f" (did you mean {suggestion}?)" if suggestion else ""
    return f"{variable} is set but names no setting{of}{hint}"


def secret_value(value: str | None, file: Path | None, setting_name: str) -> str | None:
    """A secret given directly or, preferably, in a file (its first line) kept out of the
    process list and the environment."""
    if file is None:
        return value
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {setting_name} {file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{setting_name} {file} is not UTF-8 text (byte {exc.start})") from exc
    lines = text.splitlines()
    return lines[0] if lines else ""


def describe_config(config: Any) -> dict[str, Any]:
    """The effective configuration for the start-up log line, secrets masked."""
    described: dict[str, Any] = {}
    for option in _options(type(config)):
        value = getattr(config, option.name)
        if option.field.metadata["secret"] and value not in (None, "", ()):
            value = MASK
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [_mask_property(v) if option.name.endswith("property") else v for v in value]
        described[option.name] = value
    return described


_SECRET_WORDS = ("password", "secret", "token", "key")


def _mask_property(item: Any) -> Any:
    # Pass-through client properties such as sasl.oauthbearer.client.secret=... are masked
    # by name, since their keys are not known in advance.
    if isinstance(item, str) and "=" in item:
        key, _, _ = item.partition("=")
        if any(word in key.lower() for word in _SECRET_WORDS) and "location" not in key:
            return f"{key}={MASK}"
    return item
