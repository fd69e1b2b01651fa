"""The runner: one long-lived process that runs a run's trials (notebooks and processes) for one
runtime, so that a trial pays neither for an interpreter start nor, mostly, for a kernel start.

    python3 runner.py serve --socket PATH --root DIR --idle SECONDS
    python3 runner.py connect PATH
    python3 runner.py render NOTEBOOK HTML

`serve` listens on a unix socket for harness processes speaking JSON lines (ops `hello`, `run`,
`cancel`, `render`, `remove`, `shutdown`; events `hello`, `started`, `cell`, `end`, `rendered`,
`error`; an `end` carries the trial's `resources`, see Usage). A notebook
runs in nbclient on a kernel started ahead of need; a process runs in its own session. Every
process of a trial carries the environment variable RUNTIME_MATRIX_TOKEN, so that at its end
everything it started, daemons included, is found in /proc and killed. `connect` bridges stdin
and stdout to the socket for clients that cannot reach it (`docker exec -i`). `render` writes a
notebook as HTML with nbconvert; the runner runs it as a process of its own for a `render` op.

Standard library only at import time; nbclient, nbformat and jupyter_client are imported the
first time a kernel is needed. Python 3.9+.
"""

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import types
import warnings
from pathlib import Path

TOKEN = "RUNTIME_MATRIX_TOKEN"
MAX_OUTPUT = 1 << 20
# `render` exits with this when nbconvert cannot be imported.
NO_NBCONVERT = 3
# Past its deadline by this much, a trial's processes are killed from the watchdog thread.
WATCHDOG_GRACE = 5.0
# jupyter_client and nbclient log kernel failures as errors; the trial's output carries them.
QUIET = logging.getLogger("runtime_matrix.runner")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def kill_token(token, orphans=None, spare=()):
    """SIGKILLs every process whose environment carries `token`. Scans until none is left, so
    a child forked between a scan and a kill is caught by the next scan. Killed pids other than
    `spare` (children someone else reaps) go to `orphans`, to be reaped if they are ours."""
    needle = f"\0{TOKEN}={token}\0".encode()
    for _ in range(10):
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as environ:
                    if needle not in b"\0" + environ.read():
                        continue
                os.kill(int(name), signal.SIGKILL)
            except OSError:  # gone meanwhile, or not ours to read
                continue
            found = True
            if orphans is not None and int(name) not in spare:
                orphans.add(int(name))
        if not found:
            return


# How often a running trial's processes are sampled for their memory and CPU time.
SAMPLE_PERIOD = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def token_pids(token):
    """The pids whose environment carries `token`, as kill_token finds them."""
    needle = f"\0{TOKEN}={token}\0".encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                if needle in b"\0" + environ.read():
                    pids.append(int(name))
        except OSError:
            continue
    return pids


class Usage:
    """What a trial's processes (every process carrying its token, daemons included) used,
    from /proc: the same in a container as on the host, and only this trial's even when trials
    share a runner (a container's cgroup holds them all).

    Memory: the peak, over samples, of the processes' resident memory together, and never less
    than one process's own high-water mark (VmHWM, kept by the kernel between samples). CPU:
    each process's user and system time at its last sample, plus what its parent reaped from
    children that had ended (cutime, cstime) less what was counted for those children already.
    What a process did after its last sample is missed when it is reaped by someone that is not
    the trial's (a process trial's own top process, reaped by the runner): at most SAMPLE_PERIOD
    of its time."""

    def __init__(self):
        self.peak = 0
        self.seen = {}  # pid -> (own ticks, reaped children's ticks, ppid)
        self.baseline = 0
        self.sampled = False
        self.alive = set()
        self.closed = False
        # Samples come from an executor thread and, at a trial's end, from the event loop.
        self.lock = threading.Lock()

    def sample(self, token):
        with self.lock:
            if token and not self.closed:
                self._sample(token)

    def close(self, token):
        """Takes the last sample, before the trial's processes are killed; later ones are void."""
        with self.lock:
            if token and not self.closed:
                self._sample(token)
            self.closed = True

    def _sample(self, token):
        resident = 0
        alive = set()
        for pid in token_pids(token):
            try:
                with open(f"/proc/{pid}/stat", "rb") as stat:
                    # The command may hold spaces and parentheses: fields follow the last `)`.
                    fields = stat.read().rsplit(b")", 1)[1].split()
                with open(f"/proc/{pid}/status", "rb") as status:
                    memory = {line.split(b":")[0]: line.split()[1:2]
                              for line in status if line.startswith((b"VmRSS:", b"VmHWM:"))}
            except (OSError, IndexError):
                continue
            # After `)`: state, ppid, ..., utime (14th field of the line), stime, cutime, cstime.
            ppid, utime, stime, cutime, cstime = (int(fields[i]) for i in (1, 11, 12, 13, 14))
            self.seen[pid] = (utime + stime, cutime + cstime, ppid)
            alive.add(pid)
            rss = int(memory.get(b"VmRSS", [b"0"])[0] or 0) * 1024
            hwm = int(memory.get(b"VmHWM", [b"0"])[0] or 0) * 1024
            resident += rss
            self.peak = max(self.peak, hwm)
        self.peak = max(self.peak, resident)
        self.sampled = self.sampled or bool(alive)
        self.alive = alive

    def ticks(self):
        # What ended processes were counted with, by parent: the parent's reaped-children
        # figure holds it again once it has reaped them.
        counted = {}
        for pid, (own, reaped, ppid) in self.seen.items():
            if pid not in self.alive:
                counted[ppid] = counted.get(ppid, 0) + own + reaped
        total = 0
        for pid, (own, reaped, _) in self.seen.items():
            total += own + max(0, reaped - counted.get(pid, 0))
        return total

    def start(self, token):
        """Counts from now: a warm kernel's start is setup, not the trial's CPU time."""
        with self.lock:
            self._sample(token)
            self.baseline = self.ticks()

    def figures(self):
        """The `resources` of the trial's `end` event; empty when no process was ever seen."""
        with self.lock:
            return self._figures()

    def _figures(self):
        if not self.sampled:
            return {}
        return {"peak_memory_bytes": self.peak,
                "cpu_seconds": round(max(0, self.ticks() - self.baseline) / CLOCK_TICKS, 3)}


def tail(data):
    """The last MAX_OUTPUT bytes of `data` (bytes or str) as text."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    return data[-MAX_OUTPUT:].decode("utf-8", "ignore")


def import_jupyter():
    # nbclient first: the missing-tool verdict looks for its name.
    import nbclient
    import nbformat
    import jupyter_client
    import zmq.asyncio

    return types.SimpleNamespace(
        nbclient=nbclient, nbformat=nbformat, KernelManager=jupyter_client.AsyncKernelManager,
        # One zmq context for all kernel clients: a context of its own costs each kernel two
        # threads, kept until the garbage collector finds the client.
        context=zmq.asyncio.Context(),
    )


# Built-in parameters (runtime, machine, GPU count) start with this; declared ones may not.
BUILTIN_PARAMETER = "runtime_matrix_"


def translate(value):
    """`value` as papermill's PythonTranslator writes it (papermill/translators.py, without
    black, which papermill uses only when it is installed)."""
    if value is None:
        return "None"
    if isinstance(value, str):
        escaped = value.encode("unicode_escape").decode("utf-8").replace('"', r'\"')
        return f'"{escaped}"'
    if isinstance(value, (bool, int)):
        return f"{value}"
    if isinstance(value, float):
        if math.isfinite(value):
            return f"{value}"
        if math.isnan(value):
            return "float('nan')"
        return "float('-inf')" if value < 0 else "float('inf')"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{translate(key)}: {translate(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(translate(item) for item in value) + "]"
    return translate(str(value))


def codify(parameters):
    """The source of papermill's injected cell: a comment, then one assignment a line."""
    return "# Parameters\n" + "".join(f"{name} = {translate(value)}\n" for name, value in parameters.items())


def first_tagged(nb, tag):
    """The index of the first cell tagged `tag`, or -1 (papermill's find_first_tagged_cell_index)."""
    for index, cell in enumerate(nb.cells):
        if tag in cell.get("metadata", {}).get("tags", []):
            return index
    return -1


def inject_parameters(nb, parameters):
    """`nb` with `parameters` injected as papermill does (papermill/parameterize.py): a new
    code cell tagged `injected-parameters`, replacing an earlier one, else right after the
    first cell tagged `parameters`, else at the top; and `metadata.papermill.parameters`.

    Only when the trial declared parameters or the notebook has a `parameters` cell: a
    notebook with neither runs as it is, its cells where they were. The parameters always
    hold the built-ins, which alone do not count as declared. Python notebooks only, as
    papermill finds no translator for other languages: declared parameters fail the trial
    there, built-ins alone are left out."""
    parameters = parameters or {}
    declared = [name for name in parameters if not name.startswith(BUILTIN_PARAMETER)]
    if not parameters or (not declared and first_tagged(nb, "parameters") < 0):
        return nb
    # Where papermill looks (utils.nb_language), and its Python kernel by name; nbclient runs
    # a notebook that names neither with the default kernel, Python.
    language = (nb.metadata.get("language_info", {}).get("name")
                or nb.metadata.get("kernelspec", {}).get("language") or "python")
    pyspark = nb.metadata.get("kernelspec", {}).get("name") == "pysparkkernel"
    if language.lower() != "python" and not pyspark:
        if declared:
            raise ValueError(f"parameters ({', '.join(declared)}) can only be injected into Python "
                             f"notebooks, and this notebook's language is {language}")
        return nb
    import nbformat

    nb = nbformat.v4.upgrade(nb)  # as papermill does: a new cell has an id, which needs 4.5
    cell = nbformat.v4.new_code_cell(source=codify(parameters))
    cell.metadata["tags"] = ["injected-parameters"]
    injected, tagged = first_tagged(nb, "injected-parameters"), first_tagged(nb, "parameters")
    if injected >= 0:
        nb.cells[injected] = cell
    else:
        nb.cells.insert(tagged + 1, cell)  # at the top when none is tagged (-1)
    if not isinstance(nb.metadata.get("papermill"), dict):
        nb.metadata["papermill"] = {}
    nb.metadata["papermill"]["parameters"] = dict(parameters)
    return nb


# The first words of the output of a trial whose file nbformat refused; the harness looks for them.
INVALID = "InvalidNotebook: "
# How much of a validation message is kept: nbformat quotes whole cells.
MAX_PROBLEM = 400


def read_notebook(nbformat, path):
    """The notebook at `path` as nbconvert reads it, or why not: `(nb, None)` or `(None,
    problem)`. nbconvert reads with `nbformat.read(as_version=4)`, which upgrades older versions,
    then normalizes (filling in missing cell ids, renaming duplicate ones) and validates against
    nbformat's schema before its first preprocessor runs; so does this."""
    text = None
    try:
        nb = None
        with warnings.catch_warnings():  # nbformat warns about what it repairs
            warnings.simplefilter("ignore")
            with open(path, encoding="utf-8") as source:
                text = source.read()
            nb = nbformat.reads(text, as_version=4)
            if hasattr(nbformat.validator, "normalize"):  # nbformat 5.1.4 and later
                _, nb = nbformat.validator.normalize(nb)
            nbformat.validate(nb, relax_add_props=True)
        return nb, None
    except nbformat.ValidationError as error:
        return None, shorten(top_level_problem(text, nb) or validation_problem(detailed(nbformat, nb) or error))
    except UnicodeDecodeError as error:
        return None, f"it is not UTF-8 text ({error.reason} at byte {error.start})"
    except Exception as error:
        return None, shorten(read_problem(text, error))


def detailed(nbformat, nb):
    """jsonschema's finding on `nb`, which says where: the fastjsonschema validator that
    nbformat prefers when it is installed (Debian's packages) says little more than `data.cells[0]
    must be valid exactly by one definition`."""
    try:
        minor = nb.get("nbformat_minor") if isinstance(nb.get("nbformat_minor"), int) else None
        validator = nbformat.validator.get_validator(
            version=4, version_minor=minor, relax_add_props=True, name="jsonschema")
        errors = list(validator.iter_errors(nb)) if validator else []
        return errors[0] if errors else None
    except Exception:
        return None


def validation_problem(error):
    """nbformat's complaint, with where it is: `cell 3, field `id`: ...`."""
    below, message = refine(error)
    path = list(getattr(error, "absolute_path", None) or []) + below
    if len(path) >= 2 and path[0] == "cells" and isinstance(path[1], int):
        fields = ".".join(map(str, path[2:]))
        where = f"cell {path[1]}" + (f", field `{fields}`" if fields else "")
    elif path:
        where = "field `" + ".".join(map(str, path)) + "`"
    else:
        where = ""
    return f"{where}: {message}" if where else message


def refine(error):
    """Where below `error` the problem is, and what it is: a part that matches none of several
    shapes (cell and output types, a source's string or list) is explained by the shape its type
    says it is, or by its unknown type."""
    message = getattr(error, "message", None) or str(error).splitlines()[0]
    context = list(getattr(error, "context", None) or [])
    if not context:
        return [], message
    instance = getattr(error, "instance", None)
    if all(sub.validator == "type" for sub in context):
        kinds = " or ".join(f"'{sub.validator_value}'" for sub in context)
        return [], f"{json.dumps(instance)} is not of type {kinds}"
    branches = {}
    for sub in context:
        branches.setdefault(tuple(sub.schema_path)[:1], []).append(sub)
    discriminators = ("cell_type", "output_type")
    fitting = [subs for subs in branches.values()
               if not any(list(sub.relative_path)[-1:] in ([d] for d in discriminators)
                          for sub in subs)]
    if len(fitting) == 1:
        sub = fitting[0][0]
        below, message = refine(sub)
        return list(sub.relative_path) + below, message
    if not fitting and isinstance(instance, dict):
        for key in discriminators:
            if key in instance:
                return [], f"unknown {key} {json.dumps(instance[key])}"
    return [], message


def read_problem(text, error):
    """Why nbformat could not read `text` at all."""
    if text is not None and not text.strip():
        return "the file is empty"
    try:
        data = json.loads(text) if text is not None else None
    except ValueError as bad:
        return f"it is not JSON ({bad})"
    if data is not None and not isinstance(data, dict):
        return f"it is JSON, but a {type(data).__name__} rather than a notebook's object"
    return top_level_problem(text) or f"{type(error).__name__}: {error}"


def top_level_problem(text, nb=None):
    """Which top-level field of a notebook nbformat could not read (`nb` is None) is wrong, for
    the message only: for those, nbformat says "missing an expected key: 'str' object has no
    attribute 'get'", or crashes (without `nbformat` it reads version 1 and fails converting)."""
    try:
        data = json.loads(text) if nb is None and text is not None else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    version = data.get("nbformat")
    if "nbformat" not in data:
        return "field `nbformat`: it is missing"
    if not isinstance(version, int) or isinstance(version, bool):
        return f"field `nbformat`: {shorten(json.dumps(version))} is not an integer"
    for key, kind, name in (("metadata", dict, "an object"), ("cells", list, "a list")):
        if version == 4 and key not in data:
            return f"field `{key}`: it is missing"
        if version == 4 and not isinstance(data[key], kind):
            return f"field `{key}`: {shorten(json.dumps(data[key]))} is not {name}"
    return None


def shorten(text):
    return text if len(text) <= MAX_PROBLEM else text[:MAX_PROBLEM] + "..."


def write_notebook(nbformat, nb, path):
    """Writes `nb` at `path`, as nbconvert does, without its validation warnings."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nbformat.write(nb, str(path))
    except Exception:  # the trial's verdict stands without it
        traceback.print_exc()


class Loop(asyncio.SelectorEventLoop):
    """An event loop that keeps the runner's signal handlers. nbclient adds its own SIGINT and
    SIGTERM handlers for the length of a notebook and then removes them, which would leave the
    default actions (dying without killing the trials' processes); it gets no-ops instead."""

    def add_signal_handler(self, sig, callback, *args):
        pass

    def remove_signal_handler(self, sig):
        return False

    def keep_signal_handler(self, sig, callback):
        super().add_signal_handler(sig, callback)


def expose(pid):
    """Makes `pid` (and what it starts) the first the OOM killer takes, so that a notebook that
    fills its container's memory kills its own kernel, not the runner the other trials need."""
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as adj:
            adj.write("1000")
    except (OSError, TypeError):
        pass


class Kernel:
    """One kernel, started ahead of need, used for one notebook and then killed."""

    def __init__(self, runner, name):
        self.runner, self.name = runner, name
        self.token = secrets.token_hex(8)
        self.dir = runner.root / "kernels" / self.token
        self.km = self.kc = None
        self.ready = asyncio.ensure_future(self._start())

    async def _start(self):
        jupyter = await self.runner.jupyter()
        tmp = self.dir / "tmp"
        tmp.mkdir(parents=True)
        env = dict(os.environ, TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp))
        env[TOKEN] = self.token
        self.km = jupyter.KernelManager(
            kernel_name=self.name, connection_file=str(self.dir / "connection.json"), log=QUIET
        )
        with open(self.dir / "log", "wb") as log:
            await self.km.start_kernel(env=env, cwd=str(self.dir), stdout=log, stderr=log)
        expose(getattr(self.km.provisioner, "pid", None))
        self.kc = self.km.client(context=jupyter.context)
        self.kc.allow_stdin = False
        # No heartbeat: the client asks the manager, which polls the process, whether it lives.
        self.kc.start_channels(stdin=False, hb=False)
        await self.kc.wait_for_ready(timeout=60)

    async def prepare(self, env, cwd):
        """Gives the kernel the trial's environment and working folder, without a trace in the
        notebook (as nbconvert starting a kernel there would)."""
        code = f"import os as _rm\n_rm.environ.update({env!r})\n_rm.chdir({cwd!r})\ndel _rm\n"
        reply = await self.kc.execute(code, silent=True, store_history=False, reply=True, timeout=30)
        content = reply["content"]
        if content["status"] != "ok":
            raise RuntimeError(f"preparing the kernel: {content.get('ename')}: {content.get('evalue')}")

    def log(self):
        try:
            return (self.dir / "log").read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self):
        """Kills the kernel and all it started now; the rest of the cleanup runs later, off the
        trial's path."""
        self.ready.cancel()
        self.runner.sweep(self.token, getattr(self.km and self.km.provisioner, "pid", None))
        asyncio.ensure_future(self._reap())

    async def _reap(self):
        try:
            if self.kc:
                self.kc.stop_channels()
            if self.km and self.km.has_kernel:
                await self.km.provisioner.wait()
                await self.km.cleanup_resources()
        except Exception:  # a half-started kernel may lack any of these; its folder goes anyway
            pass
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, self.dir, True)


class Trial:
    """One `run` request, from the moment it arrives."""

    def __init__(self):
        self.cancelled = False
        self.work = None
        self.token = None
        self.hard_deadline = None
        self.output = lambda: ""
        self.usage = Usage()

    def cancel(self):
        self.cancelled = True
        if self.work:
            self.work.cancel()


class Connection:
    """One client (a harness process): its slots and its trials, by id."""

    def __init__(self, writer):
        self.writer = writer
        self.slots = 1
        self.running = 0
        self.freed = asyncio.Event()
        self.trials = {}

    def send(self, event):
        if not self.writer.is_closing():
            self.writer.write(json.dumps(event).encode() + b"\n")


class Runner:
    """The server: connections, running trials and the pool of warm kernels."""

    def __init__(self, socket_path, root, idle):
        self.socket_path, self.root, self.idle = socket_path, Path(root), idle
        self.conns = set()
        self.trials = set()
        self.pool = []
        # The kernelspec warm kernels are started for: none until a client says its runtime
        # has notebooks (a hello's `kernel`), or a notebook ran.
        self.pool_name = None
        self.notebooks = 0  # notebooks holding a kernel
        self.orphans = set()
        self.last_activity = time.monotonic()
        self.nbclient = None
        self._jupyter = None

    def jupyter(self):
        """nbclient, nbformat and jupyter_client, imported once, off the event loop."""
        if self._jupyter is None:
            self._jupyter = asyncio.get_running_loop().run_in_executor(None, import_jupyter)
        return self._jupyter

    async def serve(self):
        self.root.mkdir(parents=True, exist_ok=True)
        os.environ["JUPYTER_RUNTIME_DIR"] = str(self.root / "jupyter")
        if importlib.util.find_spec("nbclient"):
            self.nbclient = importlib.metadata.version("nbclient")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.keep_signal_handler(sig, self.shutdown)
        umask = os.umask(0o177)  # the socket is born 600
        try:
            # asyncio removes a stale socket at the path first.
            self.server = await asyncio.start_unix_server(
                self.serve_connection, self.socket_path, limit=64 * MAX_OUTPUT
            )
        finally:
            os.umask(umask)
        threading.Thread(target=self.watchdog, daemon=True).start()
        print(f"runner ready {os.getpid()}", file=sys.stderr, flush=True)
        while True:
            await asyncio.sleep(0.5)
            self.reap_orphans()
            if not self.conns and not self.trials and time.monotonic() - self.last_activity > self.idle:
                self.shutdown()

    def shutdown(self):
        for trial in list(self.trials):
            if trial.token:
                kill_token(trial.token)
        for kernel in self.pool:
            kill_token(kernel.token)
        Path(self.socket_path).unlink(missing_ok=True)
        shutil.rmtree(self.root / "kernels", True)
        sys.stderr.flush()
        # Not a normal interpreter exit: that would wait for executor threads and run nbclient's
        # atexit handlers, while everything that matters is already done.
        os._exit(0)

    def sweep(self, token, spare=None):
        """Kills everything with `token` now, and again a little later: a process in the middle
        of an exec shows no environment for an instant, and a scan then misses it."""
        kill_token(token, self.orphans, {spare})
        loop = asyncio.get_running_loop()
        for delay in (0.25, 1.0):
            loop.call_later(delay, kill_token, token, self.orphans, {spare})

    def watchdog(self):
        """The last line of defence, on its own thread so that a stuck event loop cannot keep a
        trial's processes alive past its deadline."""
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            for trial in list(self.trials):
                if trial.hard_deadline and now > trial.hard_deadline and trial.token:
                    kill_token(trial.token)

    def reap_orphans(self):
        """Reaps killed daemons that were reparented to the runner (when it is a container's
        PID 1); no other process reaps them."""
        for pid in list(self.orphans):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            except ChildProcessError:
                pass
            self.orphans.discard(pid)

    def refill(self):
        """Starts or kills warm kernels so that as many are warm as trials may run at once (the
        `slots` of the open connections, together): the next notebook's kernel starts while the
        current one runs."""
        if not self.nbclient or not self.pool_name:
            return
        # Each connection may run `slots` trials at once: under cargo-nextest, one per process.
        target = max(sum(conn.slots for conn in self.conns), 1)
        while len(self.pool) < target:
            kernel = Kernel(self, self.pool_name)
            kernel.ready.add_done_callback(lambda ready, kernel=kernel: self.drop_failed(kernel))
            self.pool.append(kernel)
        while len(self.pool) > target:
            self.pool.pop().kill()

    def drop_failed(self, kernel):
        # A warm kernel that failed to start is dropped, not refilled: a notebook needing that
        # name starts its own and reports why it fails.
        if not kernel.ready.cancelled() and kernel.ready.exception() and kernel in self.pool:
            self.pool.remove(kernel)
            kernel.kill()

    def take_kernel(self, name):
        self.notebooks += 1
        for kernel in self.pool:
            if kernel.name == name:
                self.pool.remove(kernel)
                return kernel
        return Kernel(self, name)

    def release_kernel(self, kernel):
        kernel.kill()
        self.notebooks -= 1
        if kernel.ready.done() and not kernel.ready.cancelled() and not kernel.ready.exception():
            self.pool_name = kernel.name
        self.refill()

    async def serve_connection(self, reader, writer):
        conn = Connection(writer)
        self.conns.add(conn)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                self.handle(conn, line)
        except (ConnectionError, ValueError):  # reset, or a line over the limit
            pass
        finally:
            self.conns.discard(conn)
            for trial in conn.trials.values():
                trial.cancel()
            conn.freed.set()
            writer.close()
            self.last_activity = time.monotonic()
            self.refill()

    def handle(self, conn, line):
        msg = {}
        try:
            msg = json.loads(line)
            self.dispatch(conn, msg)
        except Exception as error:  # a bad request is answered, never fatal
            tid = msg.get("id") if isinstance(msg, dict) else None
            conn.send({"event": "error", "id": tid, "message": f"{type(error).__name__}: {error}"})

    async def hello(self, conn):
        """Answers a hello once a warm kernel is ready (or none can be): starting the runner's
        first kernel is setup, not the first notebook's time."""
        starting = [kernel.ready for kernel in self.pool]
        if starting and not any(ready.done() for ready in starting):
            await asyncio.wait(starting, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        conn.send({"event": "hello", "pid": os.getpid(), "python": platform.python_version(),
                   "nbclient": self.nbclient, "warm": len(self.pool)})

    def dispatch(self, conn, msg):
        op, tid = msg["op"], msg.get("id")
        if op == "hello":
            conn.slots = max(1, int(msg.get("slots", 1)))
            self.pool_name = msg.get("kernel") or self.pool_name
            conn.freed.set()
            self.refill()
            asyncio.ensure_future(self.hello(conn))
        elif op == "run":
            if msg["kind"] not in ("notebook", "process"):
                raise ValueError(f"unknown kind {msg['kind']!r}")
            if tid in conn.trials:
                raise ValueError(f"trial {tid!r} is running already")
            conn.trials[tid] = Trial()
            asyncio.ensure_future(self.trial(conn, tid, msg))
        elif op == "cancel":
            if tid in conn.trials:  # else it has ended already: its end event says how
                conn.trials[tid].cancel()
                conn.freed.set()
        elif op == "render":
            asyncio.ensure_future(self.render(conn, tid, msg))
        elif op == "remove":
            if not os.path.isabs(msg["folder"]):
                raise ValueError("remove needs an absolute folder")
            asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, msg["folder"], True)
        elif op == "shutdown":
            self.shutdown()
        else:
            raise ValueError(f"unknown op {op!r}")

    async def trial(self, conn, tid, msg):
        trial = conn.trials[tid]
        try:
            while conn.running >= conn.slots and not trial.cancelled:
                conn.freed.clear()
                await conn.freed.wait()
            if trial.cancelled:
                conn.send({"id": tid, "event": "end", "exit": None, "ended": "cancelled",
                           "output": "", "seconds": 0.0})
                return
            conn.running += 1
            self.trials.add(trial)
            try:
                await self.run(conn, tid, trial, msg)
            finally:
                self.trials.discard(trial)
                conn.running -= 1
                conn.freed.set()
        finally:
            del conn.trials[tid]
            self.last_activity = time.monotonic()

    async def run(self, conn, tid, trial, msg):
        conn.send({"id": tid, "event": "started"})
        start = time.monotonic()
        deadline = msg.get("deadline")
        if deadline is not None:
            trial.hard_deadline = start + deadline + WATCHDOG_GRACE
        work = self.notebook(conn, tid, trial, msg) if msg["kind"] == "notebook" else self.process(trial, msg)
        trial.work = asyncio.ensure_future(work)
        sampler = asyncio.ensure_future(self.sample(trial))
        done, _ = await asyncio.wait({trial.work}, timeout=deadline)
        if done and not trial.cancelled and not trial.work.cancelled():
            try:
                code, output = trial.work.result()
            except Exception:  # a bug here must end this trial, not the runner
                code, output = 1, traceback.format_exc()
            ended = "exited"
        else:
            ended = "cancelled" if trial.cancelled else "deadline"
            trial.work.cancel()
            await asyncio.wait({trial.work})  # its cleanup kills the trial's processes
            code, output = None, trial.output()
        sampler.cancel()
        trial.usage.close(None)
        conn.send({"id": tid, "event": "end", "exit": code, "ended": ended,
                   "output": tail(output), "seconds": round(time.monotonic() - start, 3),
                   "resources": trial.usage.figures()})

    async def sample(self, trial):
        """Samples the trial's processes until it ends (cancelled then), off the event loop."""
        loop = asyncio.get_running_loop()
        while True:
            await loop.run_in_executor(None, trial.usage.sample, trial.token)
            await asyncio.sleep(SAMPLE_PERIOD)

    async def notebook(self, conn, tid, trial, msg):
        folder = Path(msg["folder"])
        cwd = str(folder / msg.get("cwd", "."))
        progress = folder / msg["progress"] if msg.get("progress") else None

        def emit(event):
            conn.send({"id": tid, "event": "cell", "phase": event["event"],
                       "index": event["index"], "time": event["time"]})
            if progress:
                with open(progress, "a", encoding="utf-8") as out:
                    out.write(json.dumps(event) + "\n")

        # The same events as exec/nbconvert_hooks.py writes for nbconvert.
        def on_cell_execute(cell, cell_index, **_):
            emit({"event": "start", "index": cell_index, "time": time.time()})

        def on_cell_executed(cell, cell_index, **_):
            emit({"event": "done", "index": cell_index, "time": time.time(), "cell": cell})

        try:
            await self.copy_data(msg)
            jupyter = await self.jupyter()
            if progress:
                progress.parent.mkdir(parents=True, exist_ok=True)
        except Exception:
            return 1, traceback.format_exc()
        nb, problem = read_notebook(jupyter.nbformat, folder / msg["notebook"])
        if problem is not None:
            return 1, f"{INVALID}{problem}\n"
        try:
            nb = inject_parameters(nb, msg.get("parameters"))
        except ValueError as error:  # parameters papermill could not inject either
            return 1, f"ValueError: {error}\n"
        executed = folder / msg["executed"] if msg.get("executed") else None
        name = nb.metadata.get("kernelspec", {}).get("name") or "python3"
        kernel = self.take_kernel(name)
        trial.token = kernel.token
        trial.output = kernel.log
        try:
            await kernel.ready
            await kernel.prepare(msg.get("env", {}), cwd)
            trial.usage.start(kernel.token)
            cell_timeout = msg.get("cell_timeout")
            client = jupyter.nbclient.NotebookClient(
                nb, km=kernel.km, kernel_name=name, log=QUIET,
                # nbclient's timeout is an Integer trait.
                timeout=None if cell_timeout is None else max(1, round(cell_timeout)),
                resources={"metadata": {"path": cwd}},
                on_cell_execute=on_cell_execute, on_cell_executed=on_cell_executed,
            )
            client.kc = kernel.kc  # ready and prepared: nbclient must not start another
            await client.async_execute()
            return 0, kernel.log()
        except Exception:
            return 1, kernel.log() + traceback.format_exc()
        finally:
            # Written whatever happened: nbclient left every cell that ran, its outputs and the
            # failing one's error in `nb`, and the harness reads cells and sources from it.
            if executed is not None:
                write_notebook(jupyter.nbformat, nb, executed)
            trial.usage.close(kernel.token)
            self.release_kernel(kernel)
            final = kernel.log()  # before its folder goes
            trial.output = lambda: final

    async def copy_data(self, msg):
        """Copies the data set the runner holds for this trial (uploaded once per runner) into
        the trial's folder, off the event loop: the trial may change its copy, no other trial
        sees that."""
        data = msg.get("data")
        if data:
            target = str(Path(msg["folder"]) / data["to"])
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: shutil.copytree(data["from"], target, dirs_exist_ok=True))

    async def render(self, conn, tid, msg):
        """Renders a notebook in a trial folder to HTML (`runner.py render`, a process of its own
        under a time limit: a slow or crashing nbconvert costs the runner nothing) and answers
        `rendered`, with `note` saying why there is no HTML when there is none."""
        token = secrets.token_hex(8)
        limit = msg.get("limit", 30)
        note = None
        try:
            folder = Path(msg["folder"])
            child = await asyncio.create_subprocess_exec(
                sys.executable, os.path.abspath(__file__), "render",
                str(folder / msg["notebook"]), str(folder / msg["html"]),
                env=dict(os.environ, **{TOKEN: token}), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
            try:
                said, _ = await asyncio.wait_for(child.communicate(), limit)
                words = tail(said).strip().splitlines()[-1:] or [f"it exited with code {child.returncode}"]
                if child.returncode == NO_NBCONVERT:
                    note = words[0]
                elif child.returncode != 0:
                    note = f"nbconvert failed: {words[0]}"
            except asyncio.TimeoutError:
                note = f"nbconvert took more than {limit}s"
            finally:
                kill_token(token, self.orphans, {child.pid})
                if child.returncode is None:
                    await child.wait()
        except Exception as error:  # a render is best effort: its trial has its verdict already
            note = f"{type(error).__name__}: {error}"
        conn.send({"id": tid, "event": "rendered", "note": note})

    async def process(self, trial, msg):
        folder = Path(msg["folder"])
        trial.token = secrets.token_hex(8)
        tmp = folder / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(msg.get("env", {}))
        env.update({TOKEN: trial.token, "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp)})
        output = ProcessOutput()
        trial.output = lambda: bytes(output.data)
        try:
            transport, _ = await asyncio.get_running_loop().subprocess_exec(
                lambda: output, *msg["argv"], cwd=str(folder / msg.get("cwd", ".")), env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:  # as a shell reports a command it cannot run
            return (127 if isinstance(error, FileNotFoundError) else 126), f"{error}\n"
        expose(transport.get_pid())
        try:
            await asyncio.wait({output.exited})  # (not `await output.exited`: a cancel would void it)
            trial.usage.close(trial.token)  # what it left, before the sweep
            self.sweep(trial.token, transport.get_pid())  # what it left would hold the pipe open
            await asyncio.wait({output.closed}, timeout=2)
            code = transport.get_returncode()
            return (128 - code if code < 0 else code), bytes(output.data)
        finally:
            trial.usage.close(trial.token)
            self.sweep(trial.token, transport.get_pid())
            # Closed before asyncio saw the exit, the transport would reap the process itself,
            # under the child watcher's feet.
            await asyncio.wait({output.exited}, timeout=1)
            transport.close()


class ProcessOutput(asyncio.SubprocessProtocol):
    """A process trial's merged output (the last MAX_OUTPUT bytes) and its exit. Unlike
    asyncio's Process.wait(), `exited` does not wait for the pipe to close as well."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.exited, self.closed = loop.create_future(), loop.create_future()

    def pipe_data_received(self, fd, data):
        self.data.extend(data)
        del self.data[:-MAX_OUTPUT]

    def process_exited(self):
        self.exited.set_result(None)

    def connection_lost(self, exc):
        self.closed.set_result(None)


def connect(path):
    """Copies stdin to the socket and the socket to stdout until either side closes."""
    # The runner may still be starting (its container was started just now): wait for it.
    deadline = time.monotonic() + 30
    while True:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError) as error:
            sock.close()
            if time.monotonic() > deadline:
                print(f"runner connect: cannot connect to {path}: {error}", file=sys.stderr)
                return 3
            time.sleep(0.02)
        except OSError as error:
            print(f"runner connect: cannot connect to {path}: {error}", file=sys.stderr)
            return 3
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    try:
        while True:
            ready, _, _ = select.select([stdin, sock], [], [])
            if stdin in ready:
                data = os.read(stdin, 65536)
                if not data:
                    return 0
                sock.sendall(data)
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout, view):]
    except OSError:  # either side went away
        return 0


def render(notebook, html):
    """Writes `notebook` as HTML with nbconvert's HTMLExporter (as `jupyter nbconvert --to html`
    does), saying on its last line why not when it cannot."""
    try:
        from nbconvert import HTMLExporter
    except ImportError as error:
        print(f"nbconvert is not installed in the runtime ({error})", flush=True)
        return NO_NBCONVERT
    import nbformat

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    with open(html, "w", encoding="utf-8") as out:
        out.write(body)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("--socket", required=True)
    serve.add_argument("--root", required=True)
    serve.add_argument("--idle", type=float, required=True)
    bridge = commands.add_parser("connect")
    bridge.add_argument("path")
    html = commands.add_parser("render")
    html.add_argument("notebook")
    html.add_argument("html")
    args = parser.parse_args()
    if args.command == "connect":
        return connect(args.path)
    if args.command == "render":
        return render(args.notebook, args.html)
    loop = Loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(Runner(args.socket, args.root, args.idle).serve())


if __name__ == "__main__":
    sys.exit(main())
