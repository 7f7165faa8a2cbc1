"""Helpers for the fastmp modules that still stand in for a stdlib module."""
from types import ModuleType
from typing import Any, Callable, Dict, List, Tuple

__all__ = ()   # private; every module of the package has an __all__, as the stdlib's do


def forward(namespace: Dict[str, Any], stdlib_module: ModuleType
            ) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """Return (__getattr__, __dir__) for a fastmp module that mirrors `stdlib_module`.

    Names the fastmp module does not define are read from the stdlib module at access time, so
    its private and rebound globals (process.ORIGINAL_DIR, util._logger, ...) stay live.
    """
    module_name = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        try:
            return getattr(stdlib_module, name)
        except AttributeError:
            raise AttributeError(
                f"module {module_name!r} has no attribute {name!r}") from None

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(dir(stdlib_module)))

    return __getattr__, __dir__
