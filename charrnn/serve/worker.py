"""The model's thread: every request's work, one step of each in turn.

The model runs in one thread of its own, so the event loop never waits on it, and torch never
runs two requests at once on the same weights. A request's work is a generator: each ``next``
is one step (a token of every sample of a completion, or a whole score). The thread goes round
the active jobs taking one step of each, so concurrent streams advance token by token side by
side, however long any of them is:

    round 1: A1 B1 C1    round 2: A2 B2 C2    (C ends)    round 3: A3 B3 D1 ...

At most ``slots`` jobs are active; the next ones wait in arrival order. A job whose client went
away is closed at its next turn, and its slot goes to the next waiting job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from charrnn.errors import CharRNNError

log = logging.getLogger("charrnn.serve")

_END = object()


class Stopped(Exception):
    """The server is stopping: a job still running or waiting ends with this."""


class Ticket:
    """One request's job as the event loop sees it: iterate for what each step gave (an
    exception the job raised is raised here); ``cancel`` (or leaving the iteration early)
    frees its slot."""

    def __init__(self, make: Callable[[], Iterator[Any]], loop: asyncio.AbstractEventLoop):
        self.make, self.loop = make, loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = False
        self.steps: Iterator[Any] | None = None  # made in the model's thread, at its first turn

    def put(self, item: Any) -> None:
        """From the model's thread: hand an item to the event loop."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled = True

    def cancel(self) -> None:
        self.cancelled = True

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            while True:
                item = await self.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancel()

    async def result(self) -> list[Any]:
        """Every item, once the job is done."""
        return [item async for item in self]


class Worker:
    """The model's thread and its fair queue (see the module's text)."""

    def __init__(self, slots: int = 64):
        self.slots = slots
        self.waiting: deque[Ticket] = deque()
        self.active: list[Ticket] = []
        self.cond = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="charrnn-model", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """End every job (with ``Stopped``) and the thread, without waiting for them: open
        streams end at once, so that the server's shutdown need not wait on them."""
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def stop(self) -> None:
        self.close()
        if self.thread is not None:
            self.thread.join()

    def submit(self, make: Callable[[], Iterator[Any]]) -> Ticket:
        """Queue a job: ``make()`` is called in the model's thread and gives its steps."""
        ticket = Ticket(make, asyncio.get_running_loop())
        with self.cond:
            self.waiting.append(ticket)
            self.cond.notify()
        return ticket

    def counts(self) -> dict[str, int]:
        with self.cond:
            return {"active": len(self.active), "waiting": len(self.waiting)}

    def _run(self) -> None:
        while True:
            with self.cond:
                while not (self.stopping or self.active or self.waiting):
                    self.cond.wait()
                if self.stopping:
                    break
                self._admit()
                jobs = list(self.active)
            for job in jobs:
                last = self._step(job)
                if last is not None:  # counted as done before its handler hears of it
                    with self.cond:
                        self.active.remove(job)
                    job.put(last)
        for job in [*self.active, *self.waiting]:
            self._close(job)
            job.put(Stopped("the server is stopping"))

    def _admit(self) -> None:
        """Drop the waiting jobs whose client went away; fill the free slots in order."""
        self.waiting = deque(t for t in self.waiting if not t.cancelled)
        while self.waiting and len(self.active) < self.slots:
            self.active.append(self.waiting.popleft())

    def _step(self, job: Ticket) -> Any:
        """One step of a job; None while it goes on, else what ends it (_END, an error)."""
        if job.cancelled:
            self._close(job)
            return _END  # a handler still waiting (for a whole answer) stops waiting
        try:
            if job.steps is None:
                job.steps = job.make()
            job.put(next(job.steps))
            return None
        except StopIteration:
            return _END
        except CharRNNError as e:
            return e
        except Exception as e:
            log.exception("a request failed")
            return e

    @staticmethod
    def _close(job: Ticket) -> None:
        if job.steps is not None:
            job.steps.close()
