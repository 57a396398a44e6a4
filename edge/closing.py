"""The ``with`` protocol for resource holders whose context only has to close them:
``__enter__`` returns the object itself and ``__exit__`` calls its idempotent ``close()``,
never swallowing the exception. Classes whose ``__enter__`` also starts something keep
their own pair.
"""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

__all__ = ["Closing"]

_C = TypeVar("_C", bound="Closing")


class Closing:
    """Mixin: ``with Foo(...) as f:`` gives ``f`` (typed as ``Foo``) and closes it on exit.

    Subclasses implement :meth:`close`; it must be idempotent (``__exit__`` may follow an
    explicit ``close()``). Adds no instance state (``__slots__ = ()``).
    """

    __slots__ = ()

    def close(self) -> None:
        """Release what the object holds. Idempotent. Subclasses must override this."""
        raise NotImplementedError(f"{type(self).__name__}.close")

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
