"""Which compute precision this machine runs fast: `model.precision: auto` resolved, the same way every time.

bfloat16 halves the memory traffic of the convolutions, but only bf16 matrix hardware gains from it: on x86 that
is AMX. AVX512-BF16 alone has bf16 dot products only, and the default network trained slower in bf16 than in
float32 there (213 s against 155 s on 2 cores of an Intel Xeon with avx512_bf16 and no AMX exposed, docs/results.md).
Without either, TensorFlow emulates bf16 (about 4x slower on an AVX2 CPU, 14x with oneDNN off) or, where the CPU
flags promise bf16 but oneDNN is capped below it, aborts in the first convolution (tensorflow issues 56153, 61878).
So the answer comes from what the machine reports *and* how TensorFlow's oneDNN is configured, read from the
environment: no timing, so the same machine and environment always resolve alike.
"""

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from fmnist.nn import onednn
from fmnist.nn.model import FLOAT32, MIXED_BF16

X86_BF16_FLAGS = frozenset({"amx_bf16"})  # /proc/cpuinfo names: AMX tiles with bf16 (not avx512_bf16: see above)
ARM_BF16_FLAGS = frozenset({"bf16"})  # /proc/cpuinfo "Features" on aarch64 (Armv8.6 BF16, e.g. Graviton3)
MIN_GPU_CAPABILITY = (8, 0)  # Ampere and newer have bf16 tensor cores


@dataclass(frozen=True)
class Resolution:
    """The policy to train with and the one-line reason for it."""

    policy: str  # FLOAT32 or MIXED_BF16
    reason: str


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where there is no /proc/cpuinfo, e.g. macOS)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 | aarch64
            return frozenset(value.split())
    return frozenset()


def onednn_bf16_blocker(env: dict[str, str], machine: str) -> str | None:
    """Why TensorFlow's oneDNN cannot run bf16 fast under `env`, or None if nothing in it stops it."""
    if env.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("0", "false", "off"):
        return "TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off, and TensorFlow's own kernels emulate bf16 (~14x slower)"
    cap = onednn.max_cpu_isa(env)
    if cap and machine in ("x86_64", "AMD64") and not onednn.keeps_amx(cap):
        return f"ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN from AMX, without which bf16 runs slower or aborts"
    return None


def resolve_cpu(flags: frozenset[str], env: dict[str, str], machine: str) -> Resolution:
    """`auto` on a CPU: bf16 only with bf16 matrix instructions (AMX; Arm BF16) and a oneDNN allowed to use them."""
    native = flags & (X86_BF16_FLAGS if machine in ("x86_64", "AMD64") else ARM_BF16_FLAGS)
    if not native:
        return Resolution(FLOAT32, f"the CPU ({machine}) has no bfloat16 matrix instructions")
    blocker = onednn_bf16_blocker(env, machine)
    if blocker:
        return Resolution(FLOAT32, f"the CPU has {', '.join(sorted(native))}, but {blocker}")
    return Resolution(MIXED_BF16, f"the CPU has {', '.join(sorted(native))} and oneDNN may use it")


def resolve_gpus(capabilities: list[tuple[int, int]]) -> Resolution:
    """`auto` on GPUs: bf16 when every GPU has compute capability 8.0 or newer."""
    shown = ", ".join(f"{major}.{minor}" for major, minor in capabilities)
    if all(c >= MIN_GPU_CAPABILITY for c in capabilities):
        return Resolution(MIXED_BF16, f"every GPU has bf16 tensor cores (compute capability {shown})")
    return Resolution(FLOAT32, f"a GPU older than compute capability 8.0 ({shown}) has no fast bf16")


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability of each GPU TensorFlow sees ((0, 0) where it does not say)."""
    return [
        tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def native_precision() -> Resolution:
    """What `model.precision: auto` resolves to on this machine and in this environment."""
    capabilities = gpu_capabilities()
    if capabilities:
        return resolve_gpus(capabilities)
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
            f"warning: model.precision is mixed_bfloat16, but {native.reason}: expect it to run slower, or "
            "to abort; set model.precision to auto or float32"
        )
        return Choice(requested, warning, is_warning=True)
    return Choice(requested, f"precision: {requested} (set in params.yaml)")
