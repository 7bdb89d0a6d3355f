"""The chapter registry: what a chapter declares, and every chapter of *The Reset Book* collected.

A chapter is a notebook in ``book/`` with a cell tagged ``parameters`` plus one module,
``zaplib/experiments/<chapter>.py``, whose ``CHAPTER`` (a :class:`Chapter`) names the notebook,
every parameter with its type, default and meaning, and the named profiles:

- ``smoke``: seconds per chapter; proves the notebook runs end to end (CI, ``make book PROFILE=smoke``);
- ``quick``: ≤ 12 minutes a chapter on 2 CPU cores, cold; re-execution and teaching;
- ``long`` (optional until a chapter's regime is defined): ≤ 3 hours a chapter on 2 CPU cores, cold,
  computed in resumable chunks (``python -m zaplib compute``); what the book publishes;
- ``paper``: the scale of the paper the chapter reproduces (hours, a GPU or a cluster).

The book publishes each chapter at :func:`published_profile`: ``long`` where it exists, else ``quick``.

A profile lists only the parameters it changes from the defaults; explicit parameters
(``python -m zaplib run CHAPTER -p NAME VALUE``) override the profile. ``profile`` itself is a
parameter of every chapter and must not be declared again. Parsing and validation live in
:mod:`zaplib.runner`. :data:`REGISTRY` (built on first access by :func:`load_registry`) imports
the chapter modules, and with them torch, so ``python -m zaplib list`` takes a second or two.

Supported parameter types: ``int``, ``float``, ``bool``, ``str``, ``list[int]``, ``list[float]``,
``list[str]`` and ``tuple[float, ...]`` (or any ``tuple[T, ...]`` / fixed ``tuple[T1, T2]``).
On the command line lists and tuples are comma-separated: ``-p seeds 0,1,2``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

PROFILES = ("smoke", "quick", "long", "paper")
#: every chapter declares these; ``long`` is added by a chapter once its regime is defined, and until
#: then the book publishes the chapter at ``quick``
REQUIRED_PROFILES = ("smoke", "quick", "paper")
DEFAULT_PROFILE = "quick"
#: the book's own profile: every chapter at its :attr:`Chapter.published_profile`
PUBLISHED = "published"


class Param(NamedTuple):
    """One chapter parameter: its type, its default (used when no profile changes it), what it means,
    optionally the values it may take, and the range its numbers must lie in.

    ``bounds`` is an interval checked on a number or on every item of a list or tuple, written as a
    reader would: ``"> 0"``, ``">= 0"``, ``"[0, 1]"``, ``"(0, 1]"``, ``"[0, 1)"``, ``"(0, 1)"``. Without
    it, integers must be ``>= 0`` (sizes, counts, seeds) and floats finite. ``empty`` says whether a
    list may be empty; by default only when an empty list is its default or a profile's value."""

    type: Any
    default: Any
    help: str = ""
    choices: tuple | None = None
    bounds: str | None = None
    empty: bool | None = None


@dataclass(frozen=True)
class Chapter:
    """A chapter: ``name`` (used on the command line), ``notebook`` (path relative to the project
    root, or absolute), its ``params`` and its ``profiles`` (profile name -> parameter overrides)."""

    name: str
    notebook: str
    params: dict[str, Param]
    profiles: dict[str, dict[str, Any]]
    title: str = ""
    description: str = field(default="", compare=False)
    #: store experiments the notebook reads; their stored files are part of its up-to-date check
    experiments: tuple[str, ...] = ()
    #: parameter name -> the interval its numbers must lie in (:class:`Param` ``bounds``), given here
    #: in one place rather than in every parameter's tuple
    bounds: dict[str, str] = field(default_factory=dict, compare=False)
    #: the profile the book publishes when not the default (``long`` where it exists, else ``quick``):
    #: a chapter whose ``long`` runs are still being computed (in resumable chunks, over sessions)
    #: names ``quick`` here until they are all stored
    published: str | None = None

    def __post_init__(self):
        # Plain tuples are accepted for brevity: (type, default, help[, choices[, bounds]]).
        params = {k: Param(*v) for k, v in self.params.items()}
        unknown_bounds = sorted(set(self.bounds) - set(params))
        if unknown_bounds:
            raise ValueError(f"chapter {self.name!r}: bounds for undeclared parameters {unknown_bounds}")
        for name, bounds in self.bounds.items():
            params[name] = params[name]._replace(bounds=bounds)
        for name, param in params.items():
            if param.empty is None:  # a list may be empty where the chapter itself uses an empty one
                declared = [param.default] + [values[name] for values in self.profiles.values() if name in values]
                empty = any(isinstance(v, (list, tuple)) and len(v) == 0 for v in declared)
                params[name] = param._replace(empty=empty)
        object.__setattr__(self, "params", params)
        if "profile" in self.params:
            raise ValueError(f"chapter {self.name!r}: 'profile' is implicit, do not declare it")
        if self.published is not None and self.published not in self.profiles:
            raise ValueError(f"chapter {self.name!r} publishes profile {self.published!r}, which it lacks")
        missing = [p for p in REQUIRED_PROFILES if p not in self.profiles]
        if missing:
            raise ValueError(f"chapter {self.name!r} lacks the profiles {missing}")
        for profile, values in self.profiles.items():
            if profile not in PROFILES:
                raise ValueError(f"chapter {self.name!r}: unknown profile {profile!r}; profiles: {PROFILES}")
            unknown = sorted(set(values) - set(self.params))
            if unknown:
                raise ValueError(
                    f"chapter {self.name!r}, profile {profile!r} sets undeclared parameters {unknown}"
                )


# ---------------------------------------------------------------------------------------------
# The chapters, in reading order. Each is declared by its own module, zaplib.experiments.<name>,
# next to its configs, stored run functions and claims (one chapter = one notebook + one module).
# ---------------------------------------------------------------------------------------------

CHAPTER_MODULES = ("intro", "toolkit", "zapping", "negative_pretraining", "lure", "frozen_weights")
_registry: dict[str, Chapter] | None = None


def published_profile(chapter: Chapter) -> str:
    """The profile the book publishes for ``chapter``: its :attr:`Chapter.published` if set, else
    ``long`` once the chapter has one, else ``quick``."""
    if chapter.published is not None:
        return chapter.published
    return "long" if "long" in chapter.profiles else DEFAULT_PROFILE


def load_registry() -> dict[str, Chapter]:
    """Every chapter of the book by name, in reading order, collected from the chapter modules.

    Built on first use rather than at import: a chapter module imports :class:`Chapter` from here,
    so importing the chapter modules at the top of this module would be circular."""
    global _registry
    if _registry is None:
        modules = [importlib.import_module(f"{__package__}.experiments.{name}") for name in CHAPTER_MODULES]
        _registry = {module.CHAPTER.name: module.CHAPTER for module in modules}
    return _registry


def __getattr__(name):
    # ``from zaplib.chapters import REGISTRY`` keeps working: the registry is built on first access.
    if name == "REGISTRY":
        return load_registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_chapter(name: str, registry: dict[str, Chapter] | None = None) -> Chapter:
    """The chapter called ``name``; a ``KeyError`` listing the known chapters otherwise."""
    chapters = load_registry() if registry is None else registry
    try:
        return chapters[name]
    except KeyError:
        raise KeyError(f"unknown chapter {name!r}; known chapters: {', '.join(chapters)}") from None
