"""Run ``python -m charrnn ...`` many times without paying for Python and torch each time.

The server is started once as ``sys.executable -m tests.forkserver`` with PYTHONPATH set to
the project root; it imports charrnn (and torch) and then, for each request, forks a child
that runs ``charrnn`` exactly as ``python -m charrnn ARGS`` would (``runpy`` on the package's
``__main__``). A child is a real process: kill -9 kills it for real, its files are written by
its own system calls, its locks are its own. The server can kill a child after a delay, and
can instrument it first (a "hook") to send a signal or die at a chosen moment.

Protocol: one JSON request a line on stdin, one JSON reply a line on stdout.
    request  {"argv": [...], "log": PATH, "err": PATH or null (default: log), "cwd": DIR,
              "env": {...}, "stdin": PATH or null (default: /dev/null), "close_stdin": bool,
              "kill_after": SECONDS or null, "hook": {...} or null, "timeout": SECONDS}
    reply    {"rc": exit code (negative: killed by that signal), "killed": bool, "seconds": s}
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import stat
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# -- the server side ----------------------------------------------------------------------


def _install_hook(hook: dict[str, Any]) -> None:
    """Test-only instrumentation of the child, applied before charrnn runs."""
    if "signal_at_step" in hook:
        import charrnn.cli.trainview

        at, signum = hook["signal_at_step"], hook.get("signal", signal.SIGINT)
        on_step = charrnn.cli.trainview.TrainView.on_step

        def signalling(self: Any, s: Any) -> None:
            on_step(self, s)
            if s.step >= at and not getattr(self, "_signalled", False):
                self._signalled = True
                os.kill(os.getpid(), signum)  # a real signal, through the CLI's own handler

        charrnn.cli.trainview.TrainView.on_step = signalling
    if "die_in_write" in hook:
        # The n-th checkpoint write is torn: half the bytes reach the temporary file, then
        # the process dies before the rename, as a power cut or kill -9 would leave it.
        count = {"n": 0}
        real_fsync = os.fsync

        def dying_fsync(fd: int) -> None:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                count["n"] += 1
            if count["n"] >= hook["die_in_write"]:
                size = os.fstat(fd).st_size
                os.ftruncate(fd, size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            real_fsync(fd)

        os.fsync = dying_fsync


def _child(request: dict[str, Any]) -> None:
    code = 99
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        os.dup2(os.open(request["log"], flags, 0o644), 1)
        os.dup2(os.open(request.get("err") or request["log"], flags, 0o644), 2)
        if request.get("close_stdin"):
            os.close(0)  # as `charrnn ... 0<&-` starts: Python then has no sys.stdin
            sys.stdin = None  # type: ignore[assignment]
        else:
            os.dup2(os.open(request.get("stdin") or os.devnull, os.O_RDONLY), 0)
        os.chdir(request["cwd"])
        os.environ.update(request.get("env") or {})
        _install_hook(request.get("hook") or {})
        sys.argv = ["charrnn", *request["argv"]]
        try:
            runpy.run_module("charrnn", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve_one(request: dict[str, Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(request)
    kill_after = request.get("kill_after")
    deadline = t0 + (kill_after if kill_after is not None else request.get("timeout", 120))
    killed = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            killed = kill_after is not None
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.002)
    rc = os.waitstatus_to_exitcode(status)
    return {"rc": rc, "killed": killed, "seconds": time.monotonic() - t0}


def main() -> None:
    import torch._dynamo  # noqa: F401  (imported lazily by the first optimizer: seconds)

    import charrnn.cli  # noqa: F401  (the expensive imports, once: torch, numpy, rich, typer)

    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        print(json.dumps(_serve_one(json.loads(line))), flush=True)


# -- the client side ----------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a charrnn child process: the code under test, one thread."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", COLUMNS="200", **extra)
    return env


class ForkServer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=cli_env(),
            text=True,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        assert "ready" in ready

    def run(
        self,
        argv: list[str],
        log: Path,
        cwd: Path,
        env: dict[str, str],
        kill_after: float | None = None,
        hook: dict[str, Any] | None = None,
        timeout: float = 120.0,
        err: Path | None = None,
        stdin: Path | None = None,
        close_stdin: bool = False,
    ) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {
            "argv": [str(a) for a in argv],
            "log": str(log),
            "err": str(err) if err else None,
            "stdin": str(stdin) if stdin else None,
            "close_stdin": close_stdin,
            "cwd": str(cwd),
            "env": env,
            "kill_after": kill_after,
            "hook": hook,
            "timeout": timeout,
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    main()
