"""fmnist.lib.process, the machine: the CPU as /proc/cpuinfo reports it, `model.precision: auto` decided the same
way every time (bf16 only where this machine runs it fast), and the record of where a run ran, on any CPU kind."""

import dataclasses
import platform

import pytest

from fmnist.lib import process
from fmnist.lib.process import FLOAT32, MIXED_BF16, Choice, PipelineError, Resolution, choose, resolve_cpu, resolve_gpus

X86_AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
X86_BF16 = X86_AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16"}
X86_AMX = X86_BF16 | {"amx_tile", "amx_bf16"}


def test_cpu_flags_and_model_are_read_from_x86_and_arm_cpuinfo(tmp_path):
    (tmp_path / "x86").write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)  Processor\nflags\t\t: fpu avx2 avx512_bf16\n\n"
        "processor\t: 1\nflags\t: fpu\n"
    )
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert process.cpu_flags(tmp_path / "x86") == {"fpu", "avx2", "avx512_bf16"}
    assert process.cpu_model(tmp_path / "x86") == "Intel(R) Xeon(R) Processor"
    assert process.cpu_flags(tmp_path / "arm") == {"fp", "asimd", "bf16"}
    assert process.cpu_flags(tmp_path / "missing") == frozenset()  # macOS, Windows: no claim of bf16
    assert process.cpu_model(tmp_path / "missing")  # the platform's name for it instead


def test_the_cpu_class_is_its_newest_instruction_set():
    assert process.cpu_isa(X86_AVX2, "x86_64") == "avx2"
    assert process.cpu_isa(X86_AMX, "x86_64") == "amx"
    assert process.cpu_isa(X86_AVX2 | {"avx512f"}, "x86_64") == "avx512"
    assert process.cpu_isa(frozenset({"fp", "asimd", "bf16"}), "aarch64") == "arm_bf16"
    assert process.cpu_isa(frozenset({"fp", "asimd"}), "aarch64") == "arm"
    assert process.cpu_isa(frozenset(), "x86_64") == "sse"


def test_the_onednn_cap_is_read_from_either_name_and_normalised():
    assert process.max_cpu_isa({}) == ""
    assert process.max_cpu_isa({"ONEDNN_MAX_CPU_ISA": " avx2 "}) == "AVX2"
    assert process.max_cpu_isa({"DNNL_MAX_CPU_ISA": "avx512_core"}) == "AVX512_CORE"
    assert process.max_cpu_isa({"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "ALL"}) == "AVX2"  # the new name


def test_onednn_runs_where_tf_enable_onednn_opts_says_else_where_tensorflow_turns_it_on_by_itself():
    assert process.onednn_on(X86_AVX2, {"TF_ENABLE_ONEDNN_OPTS": "1"}, "x86_64")
    assert not process.onednn_on(X86_AMX, {"TF_ENABLE_ONEDNN_OPTS": "0"}, "x86_64")
    assert process.onednn_on(X86_BF16, {}, "x86_64") and not process.onednn_on(X86_AVX2, {}, "x86_64")


def test_kernels_are_onednn_at_the_cpu_class_capped_by_onednn_max_cpu_isa_or_eigen():
    assert process.kernels(False, "amx", {}) == "eigen"
    assert process.kernels(True, "amx", {}) == "onednn/amx"
    assert process.kernels(True, "amx", {"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "onednn/avx2"
    assert process.kernels(True, "amx", {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}) == "onednn/avx512_bf16"
    assert process.kernels(True, "amx", {"ONEDNN_MAX_CPU_ISA": "AVX10_1_512"}) == "onednn/avx512_bf16"
    assert process.kernels(True, "avx2", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == "onednn/avx2"  # no lift
    assert process.kernels(True, "avx2", {"ONEDNN_MAX_CPU_ISA": "ALL"}) == "onednn/avx2"


def test_x86_with_amx_and_default_onednn_uses_bf16():
    assert resolve_cpu(X86_AMX, {}, "x86_64").policy == MIXED_BF16


@pytest.mark.parametrize("flags", [X86_AVX2, X86_BF16])  # AVX512-BF16 without AMX trained slower in bf16
def test_x86_without_amx_uses_float32(flags):
    resolution = resolve_cpu(flags, {}, "x86_64")
    assert resolution.policy == FLOAT32 and "no bfloat16 matrix instructions" in resolution.reason


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "ONEDNN_MAX_CPU_ISA=AVX2"),  # flags still say AMX, bf16 convs abort
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16"),  # AVX512-BF16, no AMX
        ({"ONEDNN_MAX_CPU_ISA": "AVX10_2_512"}, "ONEDNN_MAX_CPU_ISA=AVX10_2_512"),  # the AVX10.2 branch without AMX
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMMX"}, "ONEDNN_MAX_CPU_ISA=AVX512_CORE_AMMX"),  # a typo: below AMX
        ({"DNNL_MAX_CPU_ISA": "AVX2"}, "ONEDNN_MAX_CPU_ISA=AVX2"),  # the older name of the same variable
        ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "TF_ENABLE_ONEDNN_OPTS=0"),  # Eigen emulates bf16, 14x slower
    ],
)
def test_an_amx_cpu_whose_onednn_cannot_use_it_uses_float32(env, named):
    resolution = resolve_cpu(X86_AMX, env, "x86_64")
    assert resolution.policy == FLOAT32 and named in resolution.reason


@pytest.mark.parametrize(
    ("flags", "env", "aborts"),
    [
        (X86_AMX, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),  # TensorFlow sends bf16 to a oneDNN without bf16 kernels
        (X86_BF16, {"DNNL_MAX_CPU_ISA": "avx2"}, True),
        (X86_AMX, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, False),  # oneDNN emulates bf16 on AVX512 (checked)
        (X86_AMX, {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}, False),  # Eigen emulates it
        (X86_AVX2, {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "1"}, False),  # TensorFlow keeps bf16 off
        (X86_AMX, {}, False),
    ],
)
def test_bf16_aborts_only_where_an_avx512_cpu_has_onednn_capped_below_avx512(flags, env, aborts):
    reason = process.bf16_abort(flags, env, "x86_64")
    assert (reason is not None) == aborts
    assert not aborts or f"ONEDNN_MAX_CPU_ISA={process.max_cpu_isa(env)}" in reason


def test_a_forced_bf16_that_would_abort_is_refused_in_one_line_before_any_work(monkeypatch):
    monkeypatch.setattr(process, "cpu_flags", lambda: X86_AMX)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    with pytest.raises(PipelineError) as refused:
        process.training_policy("mixed_bfloat16")
    assert "\n" not in str(refused.value) and "set TF_ENABLE_ONEDNN_OPTS=0" in str(refused.value)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # one of the fixes it names: TensorFlow's own kernels
    assert process.training_policy("mixed_bfloat16") == MIXED_BF16


@pytest.mark.parametrize("cap", ["AVX512_CORE_AMX", "avx10_1_512_amx_fp16", "AVX10_2_AMX_2", "ALL", "default"])
def test_onednn_caps_that_keep_amx(cap):
    assert (
        resolve_cpu(X86_AMX, {"ONEDNN_MAX_CPU_ISA": cap, "TF_ENABLE_ONEDNN_OPTS": "1"}, "x86_64").policy == MIXED_BF16
    )


def test_arm64_needs_the_bf16_feature():
    assert resolve_cpu(frozenset({"asimd", "sve", "bf16"}), {}, "aarch64").policy == MIXED_BF16
    assert resolve_cpu(frozenset({"asimd", "sve"}), {}, "aarch64").policy == FLOAT32
    assert resolve_cpu(X86_AMX, {}, "aarch64").policy == FLOAT32  # x86 flag names mean nothing there


def test_gpus_need_compute_capability_8():
    assert resolve_gpus([(8, 0), (9, 0)]).policy == MIXED_BF16
    assert resolve_gpus([(8, 0), (7, 5)]).policy == FLOAT32  # one older card: float32 for all
    assert resolve_gpus([(7, 0)]).policy == FLOAT32


NATIVE = Resolution(MIXED_BF16, "the CPU has amx_bf16 and oneDNN may use it")
EMULATED = Resolution(FLOAT32, "the CPU (x86_64) has no bfloat16 matrix instructions")


def test_auto_takes_the_native_choice_and_says_why():
    assert choose("auto", EMULATED) == Choice(FLOAT32, f"precision: float32 (auto: {EMULATED.reason})")
    assert choose("auto", NATIVE).policy == MIXED_BF16


def test_explicit_choices_are_kept_and_a_non_native_bf16_is_warned_about_in_one_line():
    assert choose("float32", NATIVE) == Choice(FLOAT32, "precision: float32 (set in params.yaml)")
    assert choose("mixed_bfloat16", NATIVE) == Choice(MIXED_BF16, "precision: mixed_bfloat16 (set in params.yaml)")
    policy, message, is_warning = dataclasses.astuple(choose("mixed_bfloat16", EMULATED))
    assert policy == MIXED_BF16 and is_warning and "\n" not in message
    assert message.startswith("warning: model.precision is mixed_bfloat16, but the CPU (x86_64) has no bfloat16")
    assert "set model.precision to auto or float32" in message


def test_describe_records_where_the_run_ran_from_this_machine_and_environment():
    found = process.describe("float32", env={"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "1"})
    assert found["precision"] == "float32" and found["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert found["cpu"] == process.cpu_model() and found["device"] == "CPU"
    capped = "onednn/avx2" if process.is_x86(platform.machine()) else f"onednn/{found['cpu_isa']}"  # x86 only
    assert found["kernels"] == capped
    assert found["intra_op_threads"] >= 1 and found["usable_cores"] >= 1
    assert process.describe("float32", env={"TF_ENABLE_ONEDNN_OPTS": "0"})["kernels"] == "eigen"
