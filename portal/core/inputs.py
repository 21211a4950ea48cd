"""Changes of what other apps build from (a catalog version, a cluster, one of its accelerator pools).

The app that makes such a change wraps its write in `inputs_change`; the apps that build from it (deployments)
register a watcher when Django starts (their AppConfig.ready). So the changing app never imports the app that
watches it: catalog and clusters sit below deployments in the layers, and what a change means to a deployment stays
the deployments app's own decision (its one notion of dirty). Not a Django signal: the watcher runs inside the
caller's transaction, before and after the write, and an error in it fails the write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class InputSource:
    """What changed: a catalog version, a cluster, or one accelerator pool of a cluster."""

    model_version_id: int | None = None
    cluster_id: int | None = None
    accelerator_type: str | None = None


InputsWatcher = Callable[[InputSource, str], AbstractContextManager[None]]

_watchers: list[InputsWatcher] = []


def inputs_watcher_register(watcher: InputsWatcher) -> None:
    """Called from an AppConfig.ready(); registering the same watcher twice keeps one."""
    if watcher not in _watchers:
        _watchers.append(watcher)


@contextmanager
def inputs_change(*, source: InputSource, reason: str) -> Iterator[None]:
    """Around the write (inside its transaction) that changes `source`; `reason` says what changed, for the events
    of whatever the watchers mark."""
    with ExitStack() as stack:
        for watcher in _watchers:
            stack.enter_context(watcher(source, reason))
        yield
