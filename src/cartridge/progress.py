"""Rich progress bars with an ETA for long-running work, quiet when asked."""

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, transient: bool = False):
    """Yields `advance(done)` that sets the completed count; a no-op when disabled.

    Bars go to stderr, so a command's stdout stays clean for its result.
    `transient` bars vanish when done, for commands whose output is one value. A bar
    whose work fails vanishes too: the error is then the one line the user sees.
    """
    if not enabled:
        yield lambda done: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=transient,
    ) as progress:
        task = progress.add_task(description, total=total)
        try:
            yield lambda done: progress.update(task, completed=done)
        except BaseException:
            progress.live.transient = True
            raise
