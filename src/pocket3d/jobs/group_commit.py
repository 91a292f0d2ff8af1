"""Group commit: the writes that threads ask for at about the same moment share one transaction and one sync to disk.

A caller that finds no group being written becomes the leader: it takes every piece of work waiting (its own among
them), runs each in a SAVEPOINT of one write transaction (so a piece that raises leaves nothing and the others go
on), commits once, and only then hands each caller its result or its error; then the next waiting caller leads. A
caller is answered after the commit reached the disk, never before. Nothing waits on purpose: alone, a piece is a
group of one; under load the groups grow by themselves, with what arrived while the last one committed.

Used where the store is SQLite, whose single write lock and sync per commit would otherwise make concurrent
writers take turns at the disk, each paying a transaction's fixed costs (the lock, BEGIN, COMMIT, the sync).

An event loop's coroutine joins a group without a thread of its own (:meth:`GroupCommit.run_async`): it cannot
lead, so a writer thread of the group commit's leads in its place, and each group's answers reach a loop in one
call. A submit that needs no thread before its transaction (api.submission's inline path) costs the loop no thread
hop and no thread wake-up of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from pocket3d.jobs.store import Store, WriteTx

T = TypeVar("T")
MAX_GROUP = 64  # pieces in one transaction at most: every answer of a group waits for its last piece


class _Piece(Generic[T]):
    __slots__ = ("work", "done", "result", "error", "wake", "future")

    def __init__(self, work: Callable[[WriteTx], T], future: asyncio.Future[T] | None = None):
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Event()  # set when done, or when handed the lead
        self.future = future  # an event loop's caller: answered through its loop, never handed the lead


class _GroupLost(Exception):
    """A piece's error took the whole transaction with it (SQLite rolls back on some errors, a full disk among
    them): every piece of the group gets that error."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class GroupCommit:
    def __init__(self, store: Store, max_group: int = MAX_GROUP):
        self.store, self.max_group = store, max_group
        self._waiting: deque[_Piece[Any]] = deque()
        self._lock = threading.Lock()
        self._leading = False
        # The writer thread leads for the event loops' pieces. Started on the first; after close() it exits once it
        # has nothing to lead, and a later hand-off starts another (a submit racing the shutdown is still answered).
        self._writer: threading.Thread | None = None
        self._writer_running = False  # under _lock: set when started, cleared by the writer as it exits
        self._writer_woken = threading.Event()
        self._writer_leads = False  # handed the lead (under _lock): a wake-up by close() alone leads nothing
        self._closed = False

    async def run_async(self, work: Callable[[WriteTx], T]) -> T:
        """:meth:`run` for a coroutine: ``work`` runs in the writer thread (or a thread leading a group), never in
        the event loop; the coroutine waits without a thread."""
        piece: _Piece[T] = _Piece(work, asyncio.get_running_loop().create_future())
        with self._lock:
            self._waiting.append(piece)
            if not self._leading:
                self._leading = True
                self._hand_to_writer()
        assert piece.future is not None
        return await piece.future

    def close(self) -> None:
        """The writer thread exits once it has nothing to lead (waited for up to 10 s)."""
        with self._lock:
            self._closed = True
            writer = self._writer
        self._writer_woken.set()
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout=10)

    def _hand_to_writer(self) -> None:
        """The lead goes to the writer thread (with ``_lock`` held)."""
        self._writer_leads = True
        if not self._writer_running:
            self._writer_running = True
            self._writer = threading.Thread(target=self._write_loop, name="group-commit", daemon=True)
            self._writer.start()
        self._writer_woken.set()

    def _write_loop(self) -> None:
        while True:
            self._writer_woken.wait()
            with self._lock:
                self._writer_woken.clear()
                leads, self._writer_leads = self._writer_leads, False
                if not leads and self._closed:
                    self._writer_running = False
                    return
            while leads:
                with self._lock:
                    if not self._waiting:
                        self._leading = False
                        if self._closed:
                            self._writer_running = False
                            return
                        break
                    group = self._take()
                self._commit(group)

    def _take(self) -> list[_Piece[Any]]:
        return [self._waiting.popleft() for _ in range(min(self.max_group, len(self._waiting)))]

    def run(self, work: Callable[[WriteTx], T]) -> T:
        """``work(tx)`` in a transaction it may share with others; its result once that transaction has committed
        and the store's listeners heard of it, or what it raised (having changed nothing), or why the commit
        failed."""
        piece: _Piece[T] = _Piece(work)
        with self._lock:
            self._waiting.append(piece)
            leading = not self._leading
            self._leading = True
        if not leading:
            piece.wake.wait()  # answered, or handed the lead (each waiter is woken once or twice, never more)
            leading = not piece.done
        if leading:
            try:
                while not piece.done:  # more were waiting ahead of it than a group takes: lead on
                    with self._lock:
                        group = self._take()
                    self._commit(group)
            finally:
                with self._lock:  # the first waiting leads next (the writer, for a loop's); with none, the next to come
                    if not self._waiting:
                        self._leading = False
                    elif self._waiting[0].future is None:
                        self._waiting[0].wake.set()
                    else:
                        self._hand_to_writer()
        if piece.error is not None:
            raise piece.error
        return piece.result

    def _commit(self, group: list[_Piece[Any]]) -> None:
        outcomes: list[tuple[BaseException | None, Any]] = []
        try:
            with self.store.write() as tx:
                for piece in group:
                    outcomes.append(self._one(tx, piece))
        except _GroupLost as lost:
            outcomes = [(lost.error, None)] * len(group)
        except BaseException as e:  # BEGIN or the commit failed (a full disk): nothing of the group was written
            outcomes = [(e, None)] * len(group)
        answers: dict[asyncio.AbstractEventLoop, list[_Piece[Any]]] = {}
        for piece, (error, result) in zip(group, outcomes, strict=True):
            piece.error, piece.result, piece.done = error, result, True
            if piece.future is None:
                piece.wake.set()
            else:
                answers.setdefault(piece.future.get_loop(), []).append(piece)
        for loop, pieces in answers.items():  # one wake-up of each loop for the whole group
            try:
                loop.call_soon_threadsafe(_answer, pieces)
            except RuntimeError:  # that loop has closed: nobody waits for these answers any more
                pass

    @staticmethod
    def _one(tx: WriteTx, piece: _Piece[Any]) -> tuple[BaseException | None, Any]:
        mine = tx.piece()
        # Plain SQL for the savepoints: SQLAlchemy's own (begin_nested) costs more than the pieces' statements.
        tx.conn.exec_driver_sql("SAVEPOINT piece")
        try:
            result = piece.work(mine)
        except Exception as e:
            try:
                tx.conn.exec_driver_sql("ROLLBACK TO piece")
                tx.conn.exec_driver_sql("RELEASE piece")
            except Exception:
                raise _GroupLost(e) from e
            return e, None
        tx.conn.exec_driver_sql("RELEASE piece")
        tx.keep(mine)
        return None, result


def _answer(pieces: list[_Piece[Any]]) -> None:
    for piece in pieces:
        future = piece.future
        if future is None or future.done():  # its caller was cancelled (a client that went away)
            continue
        if piece.error is not None:
            future.set_exception(piece.error)
        else:
            future.set_result(piece.result)
