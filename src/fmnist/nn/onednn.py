"""oneDNN's instruction-set cap (ONEDNN_MAX_CPU_ISA): how it is read, and which x86 class each value leaves.

One table for fmnist.nn.precision (does the cap keep AMX, which bf16 needs?) and fmnist.nn.environment (which
kernels a run used).
"""

# ONEDNN_MAX_CPU_ISA values -> the x86 class (fmnist.nn.environment's names) they cap oneDNN at; ALL and DEFAULT
# leave it uncapped. The AVX10 values follow oneDNN's partial order (AVX10_1_512 < AVX10_1_512_AMX <
# AVX10_1_512_AMX_FP16 < AVX10_2_AMX_2, each AMX name with an alias); AVX10 without AMX has AVX512-BF16's
# instructions. Values missing here (a typo, a newer name) count as a cap below AMX.
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


def max_cpu_isa(env: dict[str, str]) -> str:
    """The cap set in `env`, upper-case, "" if none: ONEDNN_MAX_CPU_ISA, else DNNL_MAX_CPU_ISA (its older name)."""
    return (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()


def keeps_amx(cap: str) -> bool:
    """Whether oneDNN capped at `cap` (max_cpu_isa's form) may still use AMX."""
    return cap in UNCAPPED or CAP_CLASSES.get(cap) == "amx"
