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

import os
import re
import sys
import traceback
from typing import Any, Callable, NoReturn

from absl import app, flags
from ml_collections import config_flags

flags.disclaim_key_flags()  # the flags defined below belong to the entry point calling us (its --help lists them)

USAGE_ERROR = 2  # the exit status of a command refusing its input


def fail(message: object, status: int = USAGE_ERROR) -> NoReturn:
    """Exit the command cleanly: ``error: <message>`` on stderr, exit ``status`` (2: bad input).

    Called while handling an exception with ``--verbose`` given, the traceback comes first.
    """
    if _verbose() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def exit_for_failures(succeeded: int, failed: int, strict: bool, done: str = "processed") -> None:
    """A many-patient command's exit: 1 when no patient succeeded, or with --strict when any failed.

    A run where every patient failed produced nothing to use, so it must not look like success to a script.
    """
    if succeeded == 0:
        fail(f"no patient {done}" + (f": all {failed} failed" if failed else ""), status=1)
    if strict and failed:
        fail(f"--strict: {failed} patient(s) failed ({succeeded} {done})", status=1)


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


# --------------------------------------------------------------------------
# Mistakes on the command line: one or two lines, exit 2, the traceback only with --verbose
# --------------------------------------------------------------------------

flags.DEFINE_boolean("verbose", False, "On a mistake, also print the full traceback under the one-line error.")
HELP_HINT = "Pass --help for the flags."
_CONFIG_FLAGS: list[tuple[str, Any]] = []  # (name, holder) of every config file flag, checked after parsing


def _verbose() -> bool:
    """--verbose, read from sys.argv too: the mistake may be in the parse that would have set it."""
    return any(arg in ("--verbose", "--verbose=true", "--verbose=1") for arg in sys.argv[1:])


def fail_usage(message: object) -> NoReturn:
    """A flag mistake: the error line, the line saying where the flags are listed, exit 2."""
    fail(f"{message}\n{HELP_HINT}")


def DEFINE_config_file(name: str, default: str, help: str,  # noqa: N802,A002 (absl's naming)
                       flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagHolder:
    """ml_collections' config file flag whose mistakes are error exits, not tracebacks.

    ml_collections applies ``--<name>.field=...`` overrides to the default config while defining the
    flag (it reads sys.argv then), so a misspelt field fails here, at import, before any parser runs.
    """
    try:
        holder = config_flags.DEFINE_config_file(name, default, help, lock_config=True, flag_values=flag_values)
    except Exception as exc:  # noqa: BLE001 (any failure of the override is the user's mistake)
        fail_usage(describe_config_error(exc, name, default))
    _CONFIG_FLAGS.append((name, holder))
    return holder


def describe_config_error(exc: BaseException, name: str, path: str | None = None) -> str:
    """One line for what ml_collections raises on a bad config file, config name or field."""
    text = str(exc)
    if isinstance(exc, (AttributeError, KeyError)):
        return _unknown_field(text, name, _given_config(name) or path)
    if "Error whilst parsing config file" in text:  # get_config() raised: its last line says why
        return f"--{name}={_given_config(name) or path}: {_last_line(text)}"
    if "No such file" in text or "Failed loading config file" in text:
        return _missing_config_file(_given_config(name) or path or "", name)
    return text.splitlines()[0] if text else type(exc).__name__


def _last_line(text: str) -> str:
    line = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    return line.split(": ", 1)[1] if re.match(r"^\w+(Error|Exception): ", line) else line


def _unknown_field(text: str, name: str, path: str | None) -> str:
    """'epoch' / ``'num_fold'\\nDid you mean "num_folds" instead of "num_fold"?`` as a flag mistake."""
    text = text.strip("\"'").replace("\\n", "\n").replace("\\'", "'")
    field = text.splitlines()[0].strip("'\"")
    given = next((arg.split("=", 1)[0] for arg in sys.argv[1:]
                  if re.match(rf"^--?{re.escape(name)}\.(\S+\.)?{re.escape(field)}(=|$)", arg)), f"--{name}.{field}")
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    instead = f"; did you mean {given.rsplit('.', 1)[0]}.{suggestion.group(1)}?" if suggestion else \
        f"; the fields are those of {(path or 'the config file').split(':', 1)[0]}"
    return f"{given}: the config has no field {field!r}{instead}"


def _given_config(name: str) -> str | None:
    """The value of --<name>=... in sys.argv, if given."""
    return next((arg.split("=", 1)[1] for arg in sys.argv[1:] if arg.startswith(f"--{name}=")), None)


def _missing_config_file(path: str, name: str) -> str:
    """No such config file: say so and list the files beside where it was looked for."""
    folder = os.path.dirname(path.split(":", 1)[0]) or "."
    known = sorted(f for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_")) \
        if os.path.isdir(folder) else []
    instead = f"; the configs in {folder}/ are {', '.join(known)}" if known else ""
    return f"--{name}={path}: no such config file{instead}"


def _default_config(name: str) -> str | None:
    flag = flags.FLAGS[name] if name in flags.FLAGS else None
    return str(flag.default_as_str).strip("'") if flag is not None else None


def parse_flags(argv: list[str], known_only: bool = False) -> list[str]:
    """absl's parse, every mistake (unknown flag or field, bad value, missing config) an error exit 2."""
    try:
        rest = flags.FLAGS(argv, known_only=known_only)
        for name, holder in _CONFIG_FLAGS:
            holder.value.keys()  # a config file that failed to load raises only when read
    except Exception as exc:  # noqa: BLE001 (every failure here is in what was typed)
        fail_usage(_describe_parse_error(exc))
    return rest


def _describe_parse_error(exc: BaseException) -> str:
    for name, _ in _CONFIG_FLAGS:
        if f"--{name}" in str(exc) or isinstance(exc, (AttributeError, KeyError, OSError)):
            return describe_config_error(exc, name, _default_config(name))
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def run(main: Callable[[list[str]], Any], known_only: bool = False) -> None:
    """app.run(main) where flag mistakes and app.UsageError are one-line error exits (status 2)."""
    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as exc:
            fail_usage(exc)
    app.run(guarded, flags_parser=lambda argv: parse_flags(argv, known_only))
