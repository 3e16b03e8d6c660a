"""Where a training run ran: what decides its numbers besides the code, the params and the data.

The same params give different weights on another CPU kind, another kernel library, another precision or another
thread count (TensorFlow and oneDNN promise determinism only on the same hardware and thread count), so the train
stage records this beside its metrics (metrics/train/metrics.json, `environment`): `dvc metrics diff` then shows
a change of machine, and the report (fmnist.tools.report) warns when base and head ran in different ones.
"""

import os
import platform
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fmnist.nn import onednn, precision

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
ENV_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's name as the OS reports it ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8481C", ...)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_isa(flags: frozenset[str], machine: str) -> str:
    """The newest instruction-set class the CPU has: amx, avx512_bf16, ..., avx2, avx; arm_bf16 or arm."""
    if machine in ("x86_64", "AMD64"):
        found = [name for name, flag in X86_ISA_CLASSES if flag in flags]
        return found[-1] if found else "sse"
    if machine in ("aarch64", "arm64"):
        return "arm_bf16" if precision.ARM_BF16_FLAGS & flags else "arm"
    return machine


def kernels(onednn_on: bool, isa: str, env: dict[str, str]) -> str:
    """The CPU kernels TensorFlow runs: "onednn/<isa>" (capped by ONEDNN_MAX_CPU_ISA) or "eigen"."""
    if not onednn_on:
        return "eigen"
    cap = onednn.CAP_CLASSES.get(onednn.max_cpu_isa(env))
    if cap and isa in ISA_ORDER and ISA_ORDER.index(cap) < ISA_ORDER.index(isa):
        return f"onednn/{cap}"
    return f"onednn/{isa}"


def onednn_enabled() -> bool:
    """TensorFlow's own answer: oneDNN on (its default on AVX512-VNNI/BF16 and AMX CPUs, or TF_ENABLE_ONEDNN_OPTS=1)."""
    from tensorflow.python.util import _pywrap_util_port  # the function behind TensorFlow's start-up notice

    return bool(_pywrap_util_port.IsMklEnabled())


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device() -> str:
    """Where the model computes: "CPU", or the first GPU's name with its compute capability."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    major, minor = details.get("compute_capability", (0, 0))
    return f"{details.get('device_name', 'GPU')} (compute capability {major}.{minor}) x{len(gpus)}"


def describe(policy: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The environment of a training run in `policy` (a flat mapping of strings and numbers, for metrics.json)."""
    env = dict(os.environ if env is None else env)
    isa = cpu_isa(precision.cpu_flags(), platform.machine())
    cores = usable_cores()
    # 0 means "TensorFlow's default", which is one thread per usable core for both pools.
    intra = tf.config.threading.get_intra_op_parallelism_threads() or cores
    inter = tf.config.threading.get_inter_op_parallelism_threads() or cores
    return {
        "cpu": cpu_model(),
        "cpu_isa": isa,
        "kernels": kernels(onednn_enabled(), isa, env),
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
