"""Group commit: the writes that threads ask for at about the same moment share one transaction and one sync to disk.

A caller that finds no group being written becomes the leader: it takes every piece of work waiting (its own among
them), runs each in a SAVEPOINT of one write transaction (so a piece that raises leaves nothing and the others go
on), commits once, and only then hands each caller its result or its error; then the next waiting caller leads. A
caller is answered after the commit reached the disk, never before. Nothing waits on purpose: alone, a piece is a
group of one; under load the groups grow by themselves, with what arrived while the last one committed.

Used where the store is SQLite, whose single write lock and sync per commit would otherwise make concurrent
writers take turns at the disk, each paying a transaction's fixed costs (the lock, BEGIN, COMMIT, the sync).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from pocket3d.jobs.store import Store, WriteTx

T = TypeVar("T")
MAX_GROUP = 64  # pieces in one transaction at most: every answer of a group waits for its last piece


class _Piece(Generic[T]):
    __slots__ = ("work", "done", "result", "error", "wake")

    def __init__(self, work: Callable[[WriteTx], T]):
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Event()  # set when done, or when handed the lead


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
                        group = [self._waiting.popleft() for _ in range(min(self.max_group, len(self._waiting)))]
                    self._commit(group)
            finally:
                with self._lock:  # the first waiting leads next; with none, the next to come does
                    if self._waiting:
                        self._waiting[0].wake.set()
                    else:
                        self._leading = False
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
        for piece, (error, result) in zip(group, outcomes, strict=True):
            piece.error, piece.result, piece.done = error, result, True
            piece.wake.set()

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
