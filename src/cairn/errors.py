"""The exception hierarchy: every error Cairn raises names the thing that was wrong and what to do."""

from __future__ import annotations

from collections.abc import Sequence


class CairnError(Exception):
    """Base of every error raised by Cairn itself."""


class SerializationError(CairnError, TypeError):
    """A value could not be turned into JSON (or back) for the named action, workflow or parameter."""


class PayloadTooLarge(SerializationError):
    """A serialized payload is over the configured limit (default 2 MiB)."""


class UnknownWorkflowError(CairnError, LookupError):
    """No workflow is registered under the given name."""


class UnknownActionError(CairnError, LookupError):
    """No action is registered under the given id on this worker."""


class RunNotFound(CairnError, LookupError):
    """No run has the given id."""


class ScheduleNotFound(CairnError, LookupError):
    """No schedule has the given id."""


class RunIdTaken(CairnError, ValueError):
    """A run id is taken: a fork named an id a run holds already (nothing was forked; HTTP 409), or
    a workflow awaited a child id whose run goes on as another parent's child."""


class RunIdConflict(CairnError):
    """A start named a run id that a run of another workflow holds: nothing was started.

    Starting an id that a run of the *same* workflow holds is an idempotent start (that run is
    returned); an id names one run, of one workflow, forever."""

    def __init__(self, run_id: str, existing: str, requested: str) -> None:
        self.run_id = run_id
        self.existing = existing
        self.requested = requested
        super().__init__(
            f"run id {run_id!r} is held by a run of workflow {existing!r}; it cannot name a run of "
            f"{requested!r}. Choose another id (or let Cairn make one)."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.run_id, self.existing, self.requested))


class NonDeterminismError(CairnError):
    """A replay scheduled a different step than the journal recorded at that position."""

    def __init__(self, run_id: str, step: int, recorded: str, attempted: str) -> None:
        self.run_id = run_id
        self.step = step
        self.recorded = recorded
        self.attempted = attempted
        super().__init__(
            f"run {run_id!r} diverged from its journal at step {step}: the journal recorded "
            f"{recorded} but the workflow now calls {attempted}. The workflow code changed under "
            f"a running run; restore the old code path or guard the new one with "
            f"cairn.patched('change-id')."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.run_id, self.step, self.recorded, self.attempted))


class ArgumentsMismatch(CairnError, TypeError):
    """Stored arguments (a run's input, an action step's) that this worker's code of the workflow or
    action does not take: a parameter it does not have, or one it requires that they leave out.
    Another version of the code wrote them: in a rolling deploy, an old worker took the work of new
    code. The run pauses saying so, rather than failing; deploy the code they were written for (or
    a version taking both), then `retry`."""


class WorkflowDeadlock(CairnError):
    """Workflow code ran longer than the worker's `deadlock_timeout` without awaiting (a busy loop,
    a long computation), blocking every other run of its worker (Temporal's "potential deadlock").

    The worker interrupted it and paused the run with this error; nothing of the interrupted
    activation was recorded. `where` is the `file:line in function` of workflow code it was running
    then, `stack` the workflow frames around it. Make that code await (an action, a timer) or move
    the computation into an @action, deploy the fix, then `retry` the run: it continues from where
    it was, with the results it had not taken yet."""

    def __init__(self, run_id: str, timeout: float, where: str, stack: str = "") -> None:
        self.run_id = run_id
        self.timeout = timeout
        self.where = where
        self.stack = stack
        super().__init__(
            f"run {run_id!r} blocked its worker: its workflow code ran for more than {timeout:g}s without "
            f"awaiting, at {where} (a potential deadlock). The worker interrupted it and paused the run; "
            "nothing of that activation was recorded. Workflow code must not compute for long between two "
            "awaits: await an action, a timer or a child there, or move the CPU work into an @action; deploy "
            "the fix, then retry the run."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.run_id, self.timeout, self.where, self.stack))


class JournalCorrupted(CairnError):
    """A value recorded in a run's journal does not decode: the row was changed outside Cairn, or the
    type it must decode to changed since it was recorded. The run pauses (it is not the workflow
    code's doing, so never a NonDeterminismError); fix the row or the type, then retry."""

    def __init__(self, run_id: str, step: int | None, stored: str | None, why: str) -> None:
        self.run_id = run_id
        self.step = step
        self.stored = stored
        self.why = why
        where = f"step {step}" if step is not None else "its outcome"
        shown = stored if stored is None or len(stored) <= 200 else stored[:200] + "..."
        super().__init__(
            f"the journal of run {run_id!r} is corrupted at {where}: the stored value {shown!r} {why}. "
            "The row was changed outside Cairn, or the type it decodes to changed since it was recorded; "
            "fix or restore it, then retry the run."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.run_id, self.step, self.stored, self.why))


class WorkflowSandboxError(CairnError):
    """Workflow code touched real time, I/O, threads or processes; that belongs in an action."""


class UnsafeWorkflowCode(WorkflowSandboxError):
    """A workflow's body calls functions that are not deterministic or do I/O (found at registration).

    `workflow` is the workflow's id; `findings` holds one `file:line: call — what to use instead`
    line per offending call.
    """

    def __init__(self, workflow: str, findings: Sequence[str]) -> None:
        self.workflow = workflow
        self.findings = tuple(findings)
        lines = "\n".join(f"  {f}" for f in self.findings)
        super().__init__(
            f"workflow {workflow!r} calls functions that are not deterministic or do I/O; workflow code "
            f"is replayed, so move these into an @action or use Cairn's replay-safe helpers:\n{lines}\n"
            "(if the check misjudges a line, end it with the comment `# cairn: allow`)"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.workflow, self.findings))


class ActionTimeout(CairnError, TimeoutError):
    """An action attempt ran past its timeout."""


class ActionAttemptsExhausted(CairnError):
    """An action step has no attempts left: its earlier attempts failed (as many as its retry policy
    allows) or were lost with their workers (a segfault, an OOM kill) too many times."""


class ThreadTimeoutWarning(UserWarning):
    """A plain `def` action has a `timeout=` but is not isolated: past the timeout its attempt fails,
    yet its thread cannot be stopped and runs on (`isolate=True` makes the timeout kill it)."""


class UnawaitedCallWarning(RuntimeWarning):
    """A workflow called an action (or a workflow, as a child) and dropped the call unawaited: as
    with a coroutine never awaited, nothing was scheduled."""


class TransientError(CairnError):
    """Raise from an action to ask for a retry with backoff (the default policy retries it)."""


class ActionCrashed(TransientError):
    """The process running an isolate=True action died (signal or os._exit) before returning; retried like
    any transient failure."""


class WorkflowCancelled(CairnError):
    """The run was cancelled; it will not produce a result."""


class WorkflowTimeout(WorkflowCancelled, TimeoutError):
    """The run outlived its workflow's `timeout` (counted from its start) and was cancelled: caught
    as WorkflowCancelled (DBOS's reading of a workflow timeout) or as TimeoutError."""


class ActionError(CairnError):
    """An action (or a child run) failed with an exception that cannot be re-created where it is
    raised again: its type is not loaded in this process (Cairn never imports a module because a
    record names it), or cannot be made from what was recorded (pydantic's ValidationError).

    What is raised then is a subclass of ActionError named as the original type, whose str() is the
    original message, with its attributes, and derived from the builtin exception the type derives
    from (so `except ValueError` still catches a ValidationError): a workflow sees the same error
    whether or not its worker has the type's module loaded. A BaseException that is not an
    Exception (SystemExit, KeyboardInterrupt) is an ActionError saying `Type: message`.

    `type_name` and `remote_traceback` keep what the worker recorded.
    """

    def __init__(self, message: str, type_name: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class WorkflowFailed(ActionError):
    """The run failed and its original exception type could not be re-created here: what
    `handle.result()` (and `client.run()`) raise then, as ActionError is in workflow code (and an
    ActionError, so that `except ActionError` catches it too). `type_name`, the message and
    `remote_traceback` are the run's error as recorded."""


class IllegalTransition(CairnError):
    """A control operation is not allowed from the run's current status."""


class LeaseLost(CairnError):
    """This worker's lease on a run or step expired; its write was rejected (fencing)."""


class StoreError(CairnError):
    """The database could not do what was asked: it is unreachable, refuses the connection, or is
    locked by another process. Nothing of the failed operation was written; catch this to handle
    every such failure at once."""


class SchemaBehind(StoreError):
    """The database's schema is older than this code's, and the command that opened it promised to
    write nothing, so it did not migrate it (`cairn replay`)."""


class DatabaseUnusable(StoreError):
    """The database is reached in a way no retry can mend: the process must be restarted or its
    URL changed. A worker stops on it, saying so, rather than retrying for ever."""


class DatabaseReplaced(DatabaseUnusable):
    """The SQLite file this process opened was deleted or replaced under it: nothing it writes
    reaches the file there now. Restart the process. (A worker stops on it.)"""


class PoolerModeUnsupported(DatabaseUnusable):
    """PostgreSQL is reached through a connection pooler in transaction or statement mode
    (PgBouncer, Supavisor, ...), which hands each transaction or statement to any server session:
    Cairn's prepared statements, LISTEN/NOTIFY and session settings need a session of their own.
    Connect directly, or to the pooler's session-mode port. (A worker stops on it.)"""


class DatabaseUnavailable(StoreError, ConnectionError):
    """The database cannot be reached or refuses us (a wrong address, name or password, a server
    down for longer than Cairn keeps retrying). The message names the URL, without its password,
    and the cause."""


class DatabaseLocked(StoreError, TimeoutError):
    """Another connection has held a SQLite database's write lock for longer than this one waits for
    it (the busy timeout): a process stopped in the middle of a transaction, or another program's
    long one. The message names the file, the process when it can be told, and how long we waited.
    `holder`: that process's pid; `ours`: the holder is another connection of this process."""

    def __init__(self, path: str, waited: float, holder: int | None, ours: bool = False) -> None:
        self.path = path
        self.waited = waited
        self.holder = holder
        self.ours = ours
        if holder is not None:
            who = f"another process (pid {holder}) holds its write lock"
        elif ours:
            who = "another connection of this process holds its write lock"
        else:
            # Seen by no process's file lock: one on another machine or in another container
            # sharing the file; or SQLite's record of a lock held in the parent of a fork, which
            # a connection the parent made to the file carries into the child.
            who = "its write lock is held by a connection whose process could not be told"
        resume = f" (`kill -CONT {holder}` if it was stopped, or stop it)" if holder is not None else ""
        super().__init__(
            f"the SQLite database {path} is locked: {who} and did not release it "
            f"within {waited:.1f}s. A process stopped in the middle of a transaction (Ctrl-Z, SIGSTOP, a "
            f"debugger) or another program's long transaction keeps every writer waiting; let it finish"
            f"{resume}, then try again. To wait longer, set CAIRN_SQLITE_BUSY_TIMEOUT (seconds) or add "
            f"?busy_timeout=SECONDS to the database URL."
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.waited, self.holder, self.ours))


class NotInWorkflow(CairnError, RuntimeError):
    """A workflow-only function (cairn.sleep, cairn.now, ...) was called outside a workflow."""
