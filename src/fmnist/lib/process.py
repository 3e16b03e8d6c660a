"""A process of this project from its start to its exit, and the machine it runs on. Importing this module does
nothing, and it imports the standard library only: it also runs as a script, the filter and the watchdog below.

Its exit. A PipelineError is a problem the user can fix: `run_stage` turns it into one line, `error: <message>`,
and its exit status. Other packages' Python warnings stay off stderr, where that line must stand alone.

Its start, called first by the `fmnist` command and by `python -m fmnist.stages STAGE` (dvc.yaml's commands):
- oneDNN's kernels on every x86 CPU (TF_ENABLE_ONEDNN_OPTS=1), not only where TensorFlow turns them on by itself
  (AVX512-VNNI/BF16, AMX): on an AVX2-only CPU they train the default network faster than Eigen's
  (docs/results.md). Kernels change the numbers, so dvc.yaml lists this file as a dependency of every stage. A
  user's own TF_ENABLE_ONEDNN_OPTS (0: Eigen) wins.
- TensorFlow's INFO and WARNING lines hidden (TF_CPP_MIN_LOG_LEVEL=2, unless set), so that they do not open
  every stage's output and every one-line error; its errors still show.
- Its start-up notices too. Where oneDNN is on, `import tensorflow` prints, once from each of two of its shared
  libraries:

      WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
      I0000 00:00:1795788500.905407   23088 port.cc:153] oneDNN custom operations are on. You may see ...

  Abseil's C++ logging writes them while the libraries load, straight to file descriptor 2, until a program calls
  absl::InitializeLog(), which Python programs never do. No public setting reaches it (TF_CPP_MIN_LOG_LEVEL is
  read by TensorFlow's own logger only; checked with TensorFlow 2.21), so `quiet_tensorflow` makes file descriptor
  2 a pipe into a filter process (this file, run as a script) that drops Abseil's lines below
  TF_CPP_MIN_LOG_LEVEL and passes everything else on. A separate process, so that an error printed just before a
  crash (an illegal instruction, an abort) still reaches the terminal. TF_CPP_MIN_LOG_LEVEL=0 shows everything.

The machine, as training sees it: its CPU, the precision it trains fast in, and the record of where a run ran.
- Precision (`model.precision: auto`). bfloat16 halves the memory traffic of the convolutions, but only bf16
  matrix hardware gains from it: on x86 that is AMX. AVX512-BF16 alone has bf16 dot products only, with which the
  default network trains slower in bf16 than in float32 (docs/results.md). Without either, TensorFlow emulates
  bf16, several times slower, or, where the CPU has AVX512 but oneDNN is capped below it, aborts in the first
  convolution (tensorflow issues 56153, 61878), so a forced bf16 is refused there before any work. `auto` reads
  what the machine reports *and* how oneDNN is configured in the environment: no timing, so the same machine and
  environment always resolve alike.
- The record (metrics/train/metrics.json, `environment`). The same params give other weights on another CPU kind,
  kernel library, precision or thread count (TensorFlow and oneDNN promise determinism only on the same hardware
  and thread count), so the train stage records those with the run, in git: `fmnist report` names what differs
  when base and head ran in different ones.
- The CPU facts come from /proc/cpuinfo (read here only). TensorFlow is imported by the functions that ask it
  (GPUs, threads, versions), so that naming the CPU does not load it.

The watchdog (`killed_unless_done_within`) is this file run as a script too: joining a TensorFlow cluster blocks
in C++ holding Python's GIL, so a watchdog thread would never run, and SIGTERM is not acted on (the train stage's
multi_worker strategy).
"""

import contextlib
import os
import platform
import re
import select
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = [sys.executable, "-I", "-S", os.path.abspath(__file__)]  # this file as a script: stdlib only, fast to start

# --- This process's start ------------------------------------------------------------------------------------------

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "1", LEVEL_VARIABLE: "2"}  # set where the user has not set them
ABSEIL_LINE = re.compile(rb"([IWE])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")  # I0000 00:00:1795788500.905407   23088 x.cc:1]
ABSEIL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def configure(env: MutableMapping[str, str] = os.environ) -> None:
    """Set TensorFlow's kernel and log-level defaults in `env` (this process's environment) where unset."""
    for name, value in DEFAULTS.items():
        env.setdefault(name, value)


def min_level(env: dict[str, str]) -> int:
    """TF_CPP_MIN_LOG_LEVEL as a number (0 = show everything); a value that is not one counts as 0."""
    try:
        return int(env.get(LEVEL_VARIABLE, "0"))
    except ValueError:
        return 0


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Within the block, Abseil's lines below TF_CPP_MIN_LOG_LEVEL are dropped from file descriptor 2."""
    level = min_level(dict(os.environ))
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep clean
        saved = -1
    if level <= 0 or saved < 0:
        yield
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    filter_process = subprocess.Popen([*SCRIPT, "filter", str(level)], stdin=read_end, stdout=saved)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the filter reads to the end and exits
        os.close(saved)
        filter_process.wait()


def load_tensorflow() -> None:
    """Import TensorFlow and Keras now, with their start-up notices filtered: what a command that loads them only
    once its arguments are known to be sound calls first."""
    if "keras" in sys.modules:  # loaded already: no notice left to filter, and no filter process to start
        return
    with quiet_tensorflow():
        import keras  # noqa: F401  (it imports TensorFlow)


def filter_lines(level: int, lines: Iterator[bytes]) -> Iterator[bytes]:
    """The lines to keep: all but Abseil's preamble and its lines whose severity (I, W, E: 0, 1, 2) is below
    `level`. Fatal lines (F) always pass."""
    for line in lines:
        match = ABSEIL_LINE.match(line)
        if line.rstrip(b"\r\n") == ABSEIL_PREAMBLE or (match and "IWE".index(match.group(1).decode()) < level):
            continue
        yield line


# --- Its exit: a user's error as one line and an exit status -------------------------------------------------------


class PipelineError(Exception):
    """A problem with inputs or params that the user can fix; the message names the problem and the fix."""

    exit_code = 1  # what the process exits with; subclasses may differ


class VerdictRefused(PipelineError):
    """A comparison's verdict is one the caller refuses (`--fail-on`): a gate, not a broken input."""

    exit_code = 3


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report a Ctrl-C


def hide_dependency_warnings() -> None:
    """Keep other packages' Python warnings off stderr, where a one-line error must stand alone.

    A dependency's deprecation (cryptography's "DSA is deprecated" at every import of asyncssh, say) is for the
    developers of that package, not for a user reading why a command failed. PYTHONWARNINGS or `python -W`, when
    set, decide instead.
    """
    if not sys.warnoptions:
        warnings.filterwarnings("ignore", module=r"(?!fmnist\b)")  # every module outside this package


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's (or a command's) main; a PipelineError becomes `error: <message>` on stderr and its exit code."""
    hide_dependency_warnings()
    try:
        main()
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted; earlier outputs were left as they were", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)


# --- The machine: its CPU ------------------------------------------------------------------------------------------

FLOAT32, MIXED_BF16 = "float32", "mixed_bfloat16"  # the Keras dtype policies a model is built under
CPUINFO = Path("/proc/cpuinfo")  # Linux; elsewhere (macOS) the CPU claims nothing and its name comes from `platform`

# x86 instruction-set classes from the oldest to the newest, by the /proc/cpuinfo flag that marks each one.
X86_ISA_CLASSES = (
    ("avx", "avx"),
    ("avx2", "avx2"),
    ("avx512", "avx512f"),
    ("avx512_vnni", "avx512_vnni"),
    ("avx512_bf16", "avx512_bf16"),
    ("amx", "amx_bf16"),
)
ISA_ORDER = ("sse41", *(name for name, _ in X86_ISA_CLASSES))
X86_BF16_FLAGS = frozenset({"amx_bf16"})  # bf16 matrix instructions: AMX tiles (not avx512_bf16: see the docstring)
ARM_BF16_FLAGS = frozenset({"bf16"})  # aarch64 "Features": Armv8.6 BF16, e.g. Graviton3
# Where TensorFlow's x86 wheels turn oneDNN on by themselves (IsMklEnabled, tensorflow/core/util/port.cc).
X86_ONEDNN_DEFAULT_FLAGS = frozenset({"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8"})


def is_x86(machine: str) -> bool:
    """Whether `platform.machine()` names an x86-64 CPU."""
    return machine in ("x86_64", "AMD64")


def cpuinfo_value(keys: tuple[str, ...], cpuinfo: Path = CPUINFO) -> str | None:
    """The first value in /proc/cpuinfo of one of `keys` (x86 and aarch64 name things differently), or None."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return " ".join(value.split())
    return None


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where there is no /proc/cpuinfo, e.g. macOS)."""
    return frozenset((cpuinfo_value(("flags", "Features"), cpuinfo) or "").split())


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's name as the OS reports it ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8481C", ...)."""
    return cpuinfo_value(("model name", "Model", "Hardware"), cpuinfo) or platform.processor() or platform.machine()


def cpu_isa(flags: frozenset[str], machine: str) -> str:
    """The newest instruction-set class the CPU has: amx, avx512_bf16, ..., avx2, avx; arm_bf16 or arm."""
    if is_x86(machine):
        found = [name for name, flag in X86_ISA_CLASSES if flag in flags]
        return found[-1] if found else "sse"
    if machine in ("aarch64", "arm64"):
        return "arm_bf16" if ARM_BF16_FLAGS & flags else "arm"
    return machine


# --- oneDNN and its instruction-set cap (ONEDNN_MAX_CPU_ISA) -------------------------------------------------------

# ONEDNN_MAX_CPU_ISA values -> the x86 class they cap oneDNN at; ALL and DEFAULT leave it uncapped. The AVX10
# values follow oneDNN's partial order (AVX10_1_512 < AVX10_1_512_AMX < AVX10_1_512_AMX_FP16 < AVX10_2_AMX_2, each
# AMX name with an alias); AVX10 without AMX has AVX512-BF16's instructions. Values missing here (a typo, a newer
# name) count as a cap below AMX.
CAP_CLASSES = {
    "SSE41": "sse41",
    "AVX": "avx",
    "AVX2": "avx2",
    "AVX2_VNNI": "avx2",
    "AVX2_VNNI_2": "avx2",
    "AVX512_CORE": "avx512",
    "AVX512_CORE_VNNI": "avx512_vnni",
    "AVX512_CORE_BF16": "avx512_bf16",
    "AVX512_CORE_FP16": "avx512_bf16",
    "AVX10_1_512": "avx512_bf16",
    "AVX10_2": "avx512_bf16",
    "AVX10_2_512": "avx512_bf16",
    "AVX512_CORE_AMX": "amx",
    "AVX512_CORE_AMX_FP16": "amx",
    "AVX10_1_512_AMX": "amx",
    "AVX10_1_512_AMX_FP16": "amx",
    "AVX10_2_512_AMX_2": "amx",
    "AVX10_2_AMX_2": "amx",
}
UNCAPPED = frozenset({"ALL", "DEFAULT"})
OFF = ("0", "false", "off")


def max_cpu_isa(env: dict[str, str]) -> str:
    """The cap set in `env`, upper-case, "" if none: ONEDNN_MAX_CPU_ISA, else DNNL_MAX_CPU_ISA (its older name)."""
    return (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()


def keeps_amx(cap: str) -> bool:
    """Whether oneDNN capped at `cap` (max_cpu_isa's form) may still use AMX."""
    return cap in UNCAPPED or CAP_CLASSES.get(cap) == "amx"


def onednn_on(flags: frozenset[str], env: dict[str, str], machine: str) -> bool:
    """Whether TensorFlow runs oneDNN's kernels: TF_ENABLE_ONEDNN_OPTS where set (`configure` sets 1), else
    TensorFlow's own default, which is on for x86 CPUs with VNNI, AVX512-BF16 or AMX."""
    setting = env.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower()
    if setting:
        return setting not in OFF
    return is_x86(machine) and bool(flags & X86_ONEDNN_DEFAULT_FLAGS)


def kernels(onednn: bool, isa: str, env: dict[str, str]) -> str:
    """The CPU kernels TensorFlow runs: "onednn/<isa>" (capped by ONEDNN_MAX_CPU_ISA) or "eigen"."""
    if not onednn:
        return "eigen"
    cap = CAP_CLASSES.get(max_cpu_isa(env))
    if cap and isa in ISA_ORDER and ISA_ORDER.index(cap) < ISA_ORDER.index(isa):
        return f"onednn/{cap}"
    return f"onednn/{isa}"


# --- Precision -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """The policy to train with and the one-line reason for it."""

    policy: str  # FLOAT32 or MIXED_BF16
    reason: str


def onednn_bf16_blocker(env: dict[str, str], machine: str) -> str | None:
    """Why TensorFlow's oneDNN cannot run bf16 fast under `env`, or None if nothing in it stops it."""
    if env.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in OFF:
        return "TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off, and TensorFlow's own kernels emulate bf16 (~14x slower)"
    cap = max_cpu_isa(env)
    if cap and is_x86(machine) and not keeps_amx(cap):
        return f"ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN from AMX, without which bf16 runs slower"
    return None


def bf16_abort(flags: frozenset[str], env: dict[str, str], machine: str) -> str | None:
    """Why bf16 convolutions would abort under `env`, or None if they run (fast or not).

    TensorFlow hands bf16 convolutions to oneDNN on any CPU with AVX512 (IsBF16SupportedByOneDNNOnThisCPU), and
    oneDNN capped below AVX512 has no kernel for them: "could not create a primitive descriptor" in the first one.
    """
    cap = max_cpu_isa(env)
    cap_class = CAP_CLASSES.get(cap)  # checked with TF 2.21: AVX2 aborts, AVX512_CORE and above run
    capped = cap_class in ISA_ORDER and ISA_ORDER.index(cap_class) < ISA_ORDER.index("avx512")
    if is_x86(machine) and "avx512f" in flags and onednn_on(flags, env, machine) and capped:
        return f"ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below AVX512, where this CPU's bf16 convolutions abort"
    return None


def resolve_cpu(flags: frozenset[str], env: dict[str, str], machine: str) -> Resolution:
    """`auto` on a CPU: bf16 only with bf16 matrix instructions (AMX; Arm BF16) and a oneDNN allowed to use them."""
    native = flags & (X86_BF16_FLAGS if is_x86(machine) else ARM_BF16_FLAGS)
    if not native:
        return Resolution(FLOAT32, f"the CPU ({machine}) has no bfloat16 matrix instructions")
    blocker = onednn_bf16_blocker(env, machine)
    if blocker:
        return Resolution(FLOAT32, f"the CPU has {', '.join(sorted(native))}, but {blocker}")
    return Resolution(MIXED_BF16, f"the CPU has {', '.join(sorted(native))} and oneDNN may use it")


MIN_GPU_CAPABILITY = (8, 0)  # Ampere and newer have bf16 tensor cores


def resolve_gpus(capabilities: list[tuple[int, int]]) -> Resolution:
    """`auto` on GPUs: bf16 when every GPU has compute capability 8.0 or newer."""
    shown = ", ".join(f"{major}.{minor}" for major, minor in capabilities)
    if all(c >= MIN_GPU_CAPABILITY for c in capabilities):
        return Resolution(MIXED_BF16, f"every GPU has bf16 tensor cores (compute capability {shown})")
    return Resolution(FLOAT32, f"a GPU older than compute capability 8.0 ({shown}) has no fast bf16")


def gpu_details() -> list[dict[str, Any]]:
    """TensorFlow's details of each GPU it sees (name, compute capability); [] on a CPU-only machine."""
    import tensorflow as tf

    return [tf.config.experimental.get_device_details(gpu) for gpu in tf.config.list_physical_devices("GPU")]


def native_precision() -> Resolution:
    """What `model.precision: auto` resolves to on this machine and in this environment."""
    gpus = gpu_details()
    if gpus:
        return resolve_gpus([tuple(gpu.get("compute_capability", (0, 0))) for gpu in gpus])
    return resolve_cpu(cpu_flags(), dict(os.environ), platform.machine())


@dataclass(frozen=True)
class Choice:
    """The policy to train with, and the one line to print about it (on stderr if it is a warning)."""

    policy: str
    message: str
    is_warning: bool = False


def choose(requested: str, native: Resolution) -> Choice:
    """What to train with for `model.precision` = `requested` on a machine whose native precision is `native`."""
    if requested == "auto":
        return Choice(native.policy, f"precision: {native.policy} (auto: {native.reason})")
    if requested == MIXED_BF16 and native.policy != MIXED_BF16:
        warning = (
            f"warning: model.precision is mixed_bfloat16, but {native.reason}: expect it to run slower; set "
            "model.precision to auto or float32"
        )
        return Choice(requested, warning, is_warning=True)
    return Choice(requested, f"precision: {requested} (set in params.yaml)")


def training_policy(requested: str) -> str:
    """The Keras policy to train with for `model.precision` = `requested`; prints which, and why.

    Raises PipelineError, before any work, for a bf16 that would abort in the first convolution (`bf16_abort`).
    """
    abort = bf16_abort(cpu_flags(), dict(os.environ), platform.machine()) if requested == MIXED_BF16 else None
    if abort:
        raise PipelineError(
            f"model.precision is mixed_bfloat16, but {abort}; unset ONEDNN_MAX_CPU_ISA, set "
            "TF_ENABLE_ONEDNN_OPTS=0 (bf16 in TensorFlow's own kernels, ~14x slower), or set model.precision to auto "
            "or float32"
        )
    choice = choose(requested, native_precision())
    print(choice.message, file=sys.stderr if choice.is_warning else sys.stdout, flush=True)
    return choice.policy


# --- The record of a run -------------------------------------------------------------------------------------------

ENV_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device() -> str:
    """Where the model computes: "CPU", or the first GPU's name with its compute capability."""
    gpus = gpu_details()
    if not gpus:
        return "CPU"
    major, minor = gpus[0].get("compute_capability", (0, 0))
    return f"{gpus[0].get('device_name', 'GPU')} (compute capability {major}.{minor}) x{len(gpus)}"


def describe(policy: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The environment of a training run in `policy` (a flat mapping of strings and numbers, for metrics.json)."""
    import keras
    import numpy as np
    import tensorflow as tf

    env = dict(os.environ if env is None else env)
    flags, machine = cpu_flags(), platform.machine()
    isa = cpu_isa(flags, machine)
    cores = usable_cores()
    # 0 means "TensorFlow's default", which is one thread per usable core for both pools.
    intra = tf.config.threading.get_intra_op_parallelism_threads() or cores
    inter = tf.config.threading.get_inter_op_parallelism_threads() or cores
    return {
        "cpu": cpu_model(),
        "cpu_isa": isa,
        "kernels": kernels(onednn_on(flags, env, machine), isa, env),
        **{name: env.get(name, "unset") for name in ENV_VARIABLES},
        "precision": policy,
        "device": device(),
        "usable_cores": cores,
        "intra_op_threads": intra,
        "inter_op_threads": inter,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
    }


# --- A watchdog ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def killed_unless_done_within(seconds: float, message: str) -> Iterator[None]:
    """Print `message` and kill this process if the block has not finished after `seconds`.

    Use it only before anything is written: the process ends without unwinding.
    """
    watchdog = subprocess.Popen([*SCRIPT, "watchdog", str(os.getpid()), str(seconds), message], stdin=subprocess.PIPE)
    try:
        yield
    finally:
        assert watchdog.stdin is not None  # stdin=PIPE
        watchdog.stdin.close()  # the watchdog sees end-of-file: the block is over
        watchdog.wait()


def watch(parent: int, seconds: float, message: str) -> None:
    """Wait for stdin to close (the block finished, or the parent ended anyway); past `seconds`, kill `parent`."""
    if not select.select([sys.stdin], [], [], seconds)[0]:
        print(f"error: {message}", file=sys.stderr, flush=True)
        os.kill(parent, signal.SIGKILL)


# --- Free ports ----------------------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that nothing listens on now. The kernel picks each; all stay bound until every one
    is chosen, so none repeats (one socket closed before the next is bound may get the same port back)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A port that nothing listens on now."""
    return free_ports(1)[0]


def local_cluster(count: int) -> list[dict[str, Any]]:
    """TF_CONFIG values for `count` multi_worker training processes on this machine, on ports that are free now."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(count)]


if __name__ == "__main__":  # the filter or the watchdog process
    if sys.argv[1] == "filter":  # stdin to stdout, line by line
        for kept in filter_lines(int(sys.argv[2]), iter(sys.stdin.buffer)):
            sys.stdout.buffer.write(kept)
            sys.stdout.buffer.flush()
    else:
        watch(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
