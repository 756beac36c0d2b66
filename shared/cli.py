"""The command-line vocabulary every entry point shares: deprecated flag spellings and the error exit.

One name means one thing in every command:

    --data_dir     a dataset version directory (holds manifest.json)
    --challenge    a challenge of shared/challenges.py (naming, labels, regions)
    --output_dir   a folder the command writes into
    --window       one sliding window (patch, volume or X,Y,Z)
    --windows      a list of candidate windows

Old spellings stay as deprecated aliases: they still work and print one line
naming the new flag (``deprecated_alias``, ``DEFINE_deprecated_string``).
``fail`` is a command's clean error exit: "error: ..." on stderr, exit 2.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from absl import flags

flags.disclaim_key_flags()  # the flags defined below belong to the entry point calling us (its --help lists them)

USAGE_ERROR = 2  # the exit status of a command refusing its input


def fail(message: object, status: int = USAGE_ERROR) -> NoReturn:
    """Exit the command cleanly: ``error: <message>`` on stderr, exit ``status`` (2: bad input)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def deprecation_warning(old: str, new: str) -> str:
    return f"warning: --{old} is deprecated; use --{new}"


def _warn(old: str, new: str) -> None:
    print(deprecation_warning(old, new), file=sys.stderr)


class _DeprecatedFlag(flags.Flag):
    """A flag of its own under an old name: parses as before, warns that ``new_name`` replaces it."""

    def __init__(self, new_name: str, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.new_name = new_name

    def parse(self, argument):
        _warn(self.name, self.new_name)
        super().parse(argument)


class _DeprecatedAlias(flags.Flag):
    """An old name of an existing flag: passes its value on to that flag and warns."""

    def __init__(self, original: flags.Flag, name: str):
        self.original = original  # first: Flag.__init__ sets the value, which goes to the original
        super().__init__(original.parser, original.serializer, name, original.default,
                         f"Deprecated spelling of --{original.name} (still works, with a warning).",
                         boolean=original.boolean)
        self.given: list[Any] = []  # what this spelling was given, to catch a disagreement with the new one

    def parse(self, argument):
        _warn(self.name, self.original.name)
        earlier = [self.original.value] if self.original.present > self.present else []  # --new came first
        self.original.parse(argument)
        self.given += earlier + [self.original.value]
        self.present += 1

    def unparse(self):
        super().unparse()
        self.given = []

    def agrees(self) -> bool:
        """Whether every value given under either spelling is the one the flag ended with."""
        return all(value == self.original.value for value in self.given)

    def _parse_from_default(self, value):
        return value

    @property
    def value(self):
        return self.original.value

    @value.setter
    def value(self, value):
        self.original.value = value


def deprecated_alias(old: str, new: str, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Keep ``--old`` working as ``--new`` (defined already): a warning, and an error if both disagree."""
    alias = _DeprecatedAlias(flag_values[new], old)
    flags.DEFINE_flag(alias, flag_values)
    flags.register_multi_flags_validator(
        [new, old], lambda _: alias.agrees(),
        message=f"--{old} (deprecated) and --{new} disagree: pass only --{new}", flag_values=flag_values)


def DEFINE_deprecated_string(old: str, new: str, help: str,  # noqa: N802 (absl's naming)
                             flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagHolder:
    """A string flag kept under its old name only, e.g. --output (a file) beside its successor --output_dir."""
    flag = _DeprecatedFlag(new, flags.ArgumentParser(), flags.ArgumentSerializer(), old, None,
                           f"Deprecated: use --{new}. {help}")
    return flags.DEFINE_flag(flag, flag_values)


def set_config_field(config: Any, field: str, value: Any) -> None:
    """``--<field>`` as the command's spelling of ``--config.<field>``: sets it; both, disagreeing, is an error."""
    if value is None:
        return
    current = getattr(config, field)
    if current and current != value:
        fail(f"--{field}={value} and --config.{field}={current} disagree: pass only --{field}")
    setattr(config, field, value)
