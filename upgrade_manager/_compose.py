"""The boundary to the translator: its exception becomes the dans `ComposeError`.

`compose_translator` owns its errors and imports nothing from dans; every call into it from
`upgrade_manager` runs inside `compose_input()`, so the CLI and library callers see one
exception tree (`DansError`) with the translator's message and problem list unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from upgrade_manager.errors import ComposeError

__all__ = ["compose_input"]


@contextmanager
def compose_input() -> Iterator[None]:
    """Turn `compose_translator.ComposeError` raised inside into `upgrade_manager`'s."""
    from compose_translator import ComposeError as TranslatorError  # lazy: fast `--help`
    try:
        yield
    except TranslatorError as exc:
        raise ComposeError(str(exc), exc.problems) from exc
