"""How the long-running `swarmops` commands (`run`, `gpu-agent`) start.

Settings first, then credentials: a bad value in either is the user's to fix, said in
one line on stderr with exit status 2, as argparse says its own usage errors. Then
logging is configured and the command runs until it is stopped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from swarmops.settings import LogFormat, LogLevel, SettingsError

EXIT_USAGE = 2


class _LoggingSettings(Protocol):
    @property
    def log_level(self) -> LogLevel: ...

    @property
    def log_format(self) -> LogFormat: ...


SettingsT = TypeVar("SettingsT", bound=_LoggingSettings)


def flags_of(args: argparse.Namespace, model: type[BaseModel]) -> Mapping[str, Any]:
    """The command line's value of each of `model`'s settings (None: not given)."""
    return {name: getattr(args, name, None) for name in model.model_fields}


def usage_error(command: str, error: Exception) -> int:
    print(f"swarmops {command}: error: {error}", file=sys.stderr)
    return EXIT_USAGE


def start(
    command: str,
    load_settings: Callable[[], SettingsT],
    connect: Callable[[SettingsT], Callable[[], None]],
) -> int:
    """Run `command`: its settings from `load_settings`, then `connect` (which loads the
    credentials and returns what runs the command until it is stopped); 0 when it has
    stopped, `EXIT_USAGE` when the settings or the credentials are wrong."""
    try:
        settings = load_settings()
    except SettingsError as error:
        return usage_error(command, error)
    # Imported here: `swarmops version` and friends should not pay for the HTTP client.
    from swarmops.kube.auth import CredentialsError  # noqa: PLC0415
    from swarmops.logs import configure_logging  # noqa: PLC0415

    try:
        run = connect(settings)
    except CredentialsError as error:
        return usage_error(command, error)
    configure_logging(settings.log_level, settings.log_format)
    run()
    return 0
