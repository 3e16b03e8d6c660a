"""This machine as training sees it: its CPU, the precision it trains fast in, and the record of where a run ran.

Precision (`model.precision: auto`). bfloat16 halves the memory traffic of the convolutions, but only bf16 matrix
hardware gains from it: on x86 that is AMX. AVX512-BF16 alone has bf16 dot products only, and the default network
trained slower in bf16 than in float32 there (213 s against 155 s on 2 cores of an Intel Xeon with avx512_bf16 and
no AMX exposed). Without either, TensorFlow emulates bf16 (about 4x slower on an AVX2 CPU, 14x with oneDNN off)
or, where the CPU has AVX512 but oneDNN is capped below it, aborts in the first convolution (tensorflow issues
56153, 61878), so a forced bf16 is refused there before any work. `auto` reads what the machine reports *and* how
oneDNN is configured in the environment: no timing, so the same machine and environment always resolve alike.

The record (metrics/train/metrics.json, `environment`). The same params give other weights on another CPU kind,
kernel library, precision or thread count (TensorFlow and oneDNN promise determinism only on the same hardware
and thread count), so the train stage records those with the run, in git: `fmnist report` names what differs when
base and head ran in different ones.

The CPU facts come from /proc/cpuinfo (read here only). TensorFlow is imported by the functions that ask it
(GPUs, threads, versions), so `fmnist loadtest` can name the CPU without loading it.
"""

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.lib.errors import PipelineError

FLOAT32, MIXED_BF16 = "float32", "mixed_bfloat16"  # the Keras dtype policies a model is built under
CPUINFO = Path("/proc/cpuinfo")  # Linux; elsewhere (macOS) the CPU claims nothing and its name comes from `platform`

# --- The CPU -------------------------------------------------------------------------------------------------------

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
X86_BF16_FLAGS = frozenset({"amx_bf16"})  # bf16 matrix instructions: AMX tiles (not avx512_bf16: see above)
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


# --- oneDNN and its instruction-set cap (ONEDNN_MAX_CPU_ISA) --------------------------------------------------------

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
    """Whether TensorFlow runs oneDNN's kernels: TF_ENABLE_ONEDNN_OPTS where set (`fmnist` sets 1, fmnist.lib.
    process), else TensorFlow's own default, which is on for x86 CPUs with VNNI, AVX512-BF16 or AMX."""
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


# --- Precision ---------------------------------------------------------------------------------------------------


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
