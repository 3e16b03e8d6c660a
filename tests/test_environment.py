"""fmnist.nn.environment: what a training run records about where it ran, on any CPU kind."""

from fmnist.nn import environment

X86_AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
X86_AMX = X86_AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"}


def test_the_cpu_class_is_its_newest_instruction_set():
    assert environment.cpu_isa(X86_AVX2, "x86_64") == "avx2"
    assert environment.cpu_isa(X86_AMX, "x86_64") == "amx"
    assert environment.cpu_isa(X86_AVX2 | {"avx512f"}, "x86_64") == "avx512"
    assert environment.cpu_isa(frozenset({"fp", "asimd", "bf16"}), "aarch64") == "arm_bf16"
    assert environment.cpu_isa(frozenset({"fp", "asimd"}), "aarch64") == "arm"
    assert environment.cpu_isa(frozenset(), "x86_64") == "sse"


def test_kernels_are_onednn_at_the_cpu_class_capped_by_onednn_max_cpu_isa_or_eigen():
    assert environment.kernels(False, "amx", {}) == "eigen"
    assert environment.kernels(True, "amx", {}) == "onednn/amx"
    assert environment.kernels(True, "amx", {"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "onednn/avx2"
    assert environment.kernels(True, "amx", {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}) == "onednn/avx512_bf16"
    assert environment.kernels(True, "amx", {"ONEDNN_MAX_CPU_ISA": "AVX10_1_512"}) == "onednn/avx512_bf16"
    assert environment.kernels(True, "avx2", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == "onednn/avx2"  # no lift
    assert environment.kernels(True, "avx2", {"ONEDNN_MAX_CPU_ISA": "ALL"}) == "onednn/avx2"


def test_describe_records_what_decides_the_numbers_and_what_tensorflow_itself_says_about_onednn():
    found = environment.describe("float32", env={})
    assert set(found) == {
        "cpu",
        "cpu_isa",
        "kernels",
        "ONEDNN_MAX_CPU_ISA",
        "TF_ENABLE_ONEDNN_OPTS",
        "precision",
        "device",
        "usable_cores",
        "intra_op_threads",
        "inter_op_threads",
        "tensorflow",
        "keras",
        "numpy",
        "python",
    }
    assert found["precision"] == "float32" and found["ONEDNN_MAX_CPU_ISA"] == "unset"
    assert found["intra_op_threads"] >= 1 and found["usable_cores"] >= 1
    # The kernels follow TensorFlow's own decision (this process's), not a guess from the CPU's flags.
    assert found["kernels"] == ("eigen" if not environment.onednn_enabled() else f"onednn/{found['cpu_isa']}")
