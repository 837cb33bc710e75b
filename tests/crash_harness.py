"""Run ``python -m indexer`` with test-only instrumentation, from outside the product code.

    python tests/crash_harness.py CALLS_LOG PHASE N [ACTION] -- build PHOTOS --data-dir DATA ...
    python tests/crash_harness.py --serve     # a fork server: one JSON request per stdin line


* Every model call appends one line per image to ``CALLS_LOG``: the sha256 of the uint8 model pixels
  the encoder was given (the tests map these back to files), written and fsync'ed after the forward
  pass returns, so the log holds exactly the embeddings that were computed.
* At the N-th time the build reaches ``PHASE`` the harness acts. ``ACTION`` is ``kill`` (the default:
  SIGKILL this process, as abruptly as the OOM killer or a power cut would), ``stop`` (SIGSTOP: the
  process freezes where it is, locks and open transaction included, until the test sends SIGCONT) or
  the path of a JSON file ``{"delete": [paths], "replace": {path: source}}`` applied once (files
  changing under a build).

Phases, each hooked where the work really happens rather than where the pipeline calls it:

    scan          after the N-th file is stat'ed by the scan (core.scan._stat_file)
    decode        after the N-th image's pixels are decoded (PIL ImageFile.load)
    inference     after the N-th forward pass returned (core.encoder.Encoder._embed_pixels: one per
                  photo on the CPU)
    commit        at the N-th database COMMIT, its rows flushed but not yet committed (SQLAlchemy event)
    index-write   after the N-th FAISS file is written to its temporary name, which is then cut to half
                  its length (a torn write) before the kill (faiss.write_index)
    none          never
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from core.image_threads import one_intra_op_thread

PHASES = ("scan", "decode", "inference", "commit", "index-write", "none")
REPO = Path(__file__).resolve().parents[1]
HARNESS_FILE = str(Path(__file__).resolve())


def harness_env() -> dict[str, str]:
    """The environment of instrumented runs. One torch thread: on a shared 2-core machine two threads per
    process run ~10x slower, and every run of a comparison must use the same setting so that their
    embeddings agree bit for bit."""
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


class HarnessServer:
    """Test-side client of ``--serve``: runs instrumented ``python -m indexer`` commands, one at a time."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.runs = 0
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=harness_env(),
            text=True,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()
        if not ready:
            raise RuntimeError("the crash harness server did not start")

    def run(
        self,
        calls_log: Path,
        phase: str,
        at: int,
        args: list[str],
        *,
        action: str = "kill",
        max_file_bytes: int = 0,
    ) -> subprocess.CompletedProcess[str]:
        """``python -m indexer ARGS``, instrumented; returncode is negative for a signal, as subprocess's."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.runs += 1
        out, err = self.workdir / f"run{self.runs}.out", self.workdir / f"run{self.runs}.err"
        request = {
            "calls": str(calls_log), "phase": phase, "at": at, "action": action, "args": args,
            "stdout": str(out), "stderr": str(err), "max_file_bytes": max_file_bytes,
        }  # fmt: skip
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError("the crash harness server died")
        returncode = int(json.loads(answer)["returncode"])
        return subprocess.CompletedProcess(
            args, returncode, out.read_text(encoding="utf-8", errors="replace"), err.read_text("utf-8", "replace")
        )

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


class _Trigger:
    def __init__(self, phase: str, at: int, action: str) -> None:
        self.phase = phase
        self.at = at
        self.action = action
        self.counts: dict[str, int] = {}

    def reached(self, phase: str, before_kill: Any = None) -> None:
        self.counts[phase] = self.counts.get(phase, 0) + 1
        if phase != self.phase or self.counts[phase] != self.at:
            return
        if self.action == "kill":
            if before_kill is not None:
                before_kill()
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            _mutate(Path(self.action))


def _mutate(plan_file: Path) -> None:
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    for path in plan.get("delete", []):
        os.unlink(path)
    for target, source in plan.get("replace", {}).items():
        shutil.copyfile(source, target)


def _install(calls_log: Path, trigger: _Trigger) -> None:
    import faiss
    from PIL import ImageFile
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    import core.scan
    from core.encoder import Encoder

    stat_file = core.scan._stat_file

    def counted_stat_file(path: Path) -> Any:
        result = stat_file(path)
        trigger.reached("scan")
        return result

    core.scan._stat_file = counted_stat_file

    load = ImageFile.ImageFile.load

    def counted_load(self: Any) -> Any:
        result = load(self)
        trigger.reached("decode")
        return result

    ImageFile.ImageFile.load = counted_load  # type: ignore[method-assign]

    embed_pixels = Encoder._embed_pixels
    one_at_a_time = threading.Lock()  # image threads run forward passes concurrently

    def logged_embed_pixels(self: Any, pixels: Any, reference: bool) -> Any:
        result = embed_pixels(self, pixels, reference)
        if reference:  # the first photos' fp32 faithfulness check: not an embedding that gets stored
            return result
        lines = "".join(hashlib.sha256(row.contiguous().numpy().tobytes()).hexdigest() + "\n" for row in pixels)
        with one_at_a_time:
            with calls_log.open("a", encoding="utf-8") as log:
                log.write(lines)
                log.flush()
                os.fsync(log.fileno())
            trigger.reached("inference")
        return result

    Encoder._embed_pixels = logged_embed_pixels  # type: ignore[method-assign]

    def on_commit(_connection: Any) -> None:
        trigger.reached("commit")

    event.listen(Engine, "commit", on_commit)

    write_index = faiss.write_index

    def torn_write_index(index: Any, path: str) -> None:
        write_index(index, path)

        def tear() -> None:
            size = os.path.getsize(path)
            with open(path, "r+b") as handle:
                handle.truncate(size // 2)

        trigger.reached("index-write", tear)

    faiss.write_index = torn_write_index  # type: ignore[assignment]


def run(calls_log: str, phase: str, at: int, action: str, args: list[str]) -> int:
    """Instrument this process, then run ``python -m indexer ARGS`` in it."""
    if phase not in PHASES:
        raise SystemExit(f"unknown phase {phase!r}; one of {', '.join(PHASES)}")
    _install(Path(calls_log), _Trigger(phase, at, action))
    from indexer.cli import main as indexer_main

    return indexer_main(args)


def serve() -> None:
    """Import torch, birder and the indexer once, then fork a fresh child per request.

    Each child is a real process (its own pid, file descriptors, flock and SQLite connections) that is
    killed like any other; forking only saves the ~10 s of imports per run on a busy machine. A request
    is ``{"calls", "phase", "at", "action", "args", "stdout", "stderr", "max_file_bytes"}``; the answer is
    ``{"returncode": N}``, negative for a signal, as subprocess reports it.
    """
    import faiss  # noqa: F401
    import sqlalchemy  # noqa: F401

    import indexer.cli
    import indexer.pipeline  # noqa: F401

    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                for fd, name in ((1, request["stdout"]), (2, request["stderr"])):
                    target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(target, fd)
                    os.close(target)
                if request.get("max_file_bytes"):
                    import resource

                    limit = int(request["max_file_bytes"])
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
                    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
                code = run(request["calls"], request["phase"], int(request["at"]), request["action"], request["args"])
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"returncode": returncode}), flush=True)


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        serve()
        return 0
    split = argv.index("--")
    calls_log, phase, at, *rest = argv[:split]
    return run(calls_log, phase, int(at), rest[0] if rest else "kill", argv[split + 1 :])


# Builds inside the test process use one intra-op thread, as the harness's children do (see harness_env).
one_torch_thread = one_intra_op_thread

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
