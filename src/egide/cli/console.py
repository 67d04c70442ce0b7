"""What every command shares: the consoles, one-line errors, progress bars.

Output meant for scripts goes alone to stdout; messages go to stderr, never wrapped (a message
must stay one line when stderr is a file or a pipe).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError

from egide.core.errors import EgideError
from egide.crypto.errors import CryptoError

F = TypeVar("F", bound=Callable[..., Any])

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    err.print(f"egide: error: {message}", markup=False)
    raise typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Expected failures become one line on stderr and exit code 1; never a trace."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (EgideError, CryptoError) as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            fail(f"database error: {type(exc).__name__} ({str(exc).splitlines()[0][:200]})")
        except OSError as exc:
            fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return None

    return wrapper  # type: ignore[return-value]


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
