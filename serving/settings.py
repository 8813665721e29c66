"""One declaration per setting: its flag, environment variable, type, default and help.

A settings class is a frozen dataclass whose fields are declared with `setting(...)`. The flag is
`--<field name>` (units are part of the name: `_s`, `_ms`, `_bytes`), the value comes from the
flag, else the environment variable, else the default; `None` means unset, so `0` is a value.
Parsers are built from the declarations, so flags, `--help` and the README table cannot drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .limits import TextLimits

T = TypeVar("T")


def flag_bool(value: str) -> bool:
    """`true/false`, `1/0`, `yes/no` (as KServe's own boolean flags)."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def setting(default: Any, help: str, *, env: str | None = None, parse: Callable[[str], Any] | None = None,
            choices: Sequence[str] | None = None, flag: bool = True) -> Any:
    """Declare a setting; `parse` defaults to the type of `default`. Secrets take `flag=False`:
    process arguments are visible to every user of the node."""
    if parse is None:
        parse = flag_bool if isinstance(default, bool) else type(default) if default is not None else str
    return dataclasses.field(default=default, metadata={"help": help, "env": env, "parse": parse,
                                                        "choices": choices, "flag": flag})


@dataclass(frozen=True)
class ServerSettings:
    """What both services take: KServe's server flags they read, and the per-request limits."""

    model_name: str = setting("sentiment", "model name on the endpoint paths")
    http_port: int = setting(8080, "REST port")
    grpc_port: int = setting(8081, "gRPC port")
    workers: int = setting(1, "server processes; must be 1 (KServe injects it; scale pods instead)")
    max_texts: int = setting(256, "most texts in one request (413 beyond)")
    max_chars: int = setting(10_000, "most characters in one text (413 beyond)")
    max_body_bytes: int = setting(4 << 20, "largest request body in bytes (413 beyond)")
    log_requests: bool = setting(False, "write an access-log and a timing line per request")

    @property
    def limits(self) -> TextLimits:
        return TextLimits(max_texts=self.max_texts, max_chars=self.max_chars, max_body_bytes=self.max_body_bytes)


def build_parser(cls: type, prog: str, description: str, parent: argparse.ArgumentParser | None = None,
                 add_help: bool = True) -> argparse.ArgumentParser:
    """A parser with one flag per setting of `cls`, on top of KServe's own flags when `parent` is given.

    No abbreviations: a prefix of one flag would silently set another (`--redis_password pw` once set
    a password-file flag), and the early parse must not take a KServe flag for one of ours."""
    parser = argparse.ArgumentParser(prog=prog, description=description, parents=[parent] if parent else [],
                                     conflict_handler="resolve", add_help=add_help, allow_abbrev=False)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "parse" not in meta or not meta["flag"]:
            continue
        extra = {"nargs": "?", "const": True} if meta["parse"] is flag_bool else {}
        env = f", env {meta['env']}" if meta["env"] else ""
        default = "unset" if f.default is None else f.default
        parser.add_argument(f"--{f.name}", type=meta["parse"], choices=meta["choices"], default=None,
                            help=f"{meta['help']} (default {default}{env})", **extra)
    return parser


def settings_from(cls: type[T], args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> T:
    """Flag, else environment variable, else default, for every setting of `cls`."""
    values = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "parse" not in meta:
            continue
        value = getattr(args, f.name, None)
        if value is None and meta["env"] and env.get(meta["env"], "") != "":
            raw = env[meta["env"]]
            try:
                value = meta["parse"](raw)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise SystemExit(f"environment variable {meta['env']}={raw!r} is not valid: {exc}") from None
            if meta["choices"] and value not in meta["choices"]:
                raise SystemExit(f"environment variable {meta['env']}={raw!r} must be one of {meta['choices']}")
        values[f.name] = f.default if value is None else value
    return cls(**values)


def early_settings(cls: type[T], argv: Sequence[str], env: Mapping[str, str] = os.environ) -> T:
    """`cls` from this service's own flags alone, ignoring every other flag and --help: for work that
    starts before the full parse (which needs KServe's parser, and so KServe's imports)."""
    known, _ = build_parser(cls, "", "", add_help=False).parse_known_args(argv)
    return settings_from(cls, known, env)


def parse_settings(cls: type[T], argv: Sequence[str], prog: str, description: str,
                   parent: argparse.ArgumentParser | None = None, env: Mapping[str, str] = os.environ) -> T:
    return settings_from(cls, build_parser(cls, prog, description, parent).parse_args(argv), env)
