"""`model.precision: auto`: bf16 only where this machine runs it fast, decided the same way every time."""

import dataclasses

import pytest

from fmnist.nn.precision import FLOAT32, MIXED_BF16, Choice, Resolution, choose, cpu_flags, resolve_cpu, resolve_gpus

BF16_X86 = frozenset({"avx2", "avx512f", "avx512_bf16"})
AMX_X86 = frozenset({"avx2", "avx512f", "amx_bf16", "amx_tile"})
AVX2_X86 = frozenset({"avx2", "fma"})


def test_x86_with_amx_and_default_onednn_uses_bf16():
    assert resolve_cpu(AMX_X86, {}, "x86_64").policy == MIXED_BF16


@pytest.mark.parametrize("flags", [AVX2_X86, BF16_X86])  # AVX512-BF16 without AMX trained slower in bf16
def test_x86_without_amx_uses_float32(flags):
    resolution = resolve_cpu(flags, {}, "x86_64")
    assert resolution.policy == FLOAT32 and "no bfloat16 matrix instructions" in resolution.reason


@pytest.mark.parametrize(
    "env, named",
    [
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "ONEDNN_MAX_CPU_ISA=AVX2"),  # flags still say AMX, bf16 convs abort
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16"),  # AVX512-BF16, no AMX
        ({"ONEDNN_MAX_CPU_ISA": "AVX10_2_512"}, "ONEDNN_MAX_CPU_ISA=AVX10_2_512"),  # the AVX10.2 branch without AMX
        ({"DNNL_MAX_CPU_ISA": "AVX2"}, "ONEDNN_MAX_CPU_ISA=AVX2"),  # the older name of the same variable
        ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "TF_ENABLE_ONEDNN_OPTS=0"),  # Eigen emulates bf16, 14x slower
    ],
)
def test_an_amx_cpu_whose_onednn_cannot_use_it_uses_float32(env, named):
    resolution = resolve_cpu(AMX_X86, env, "x86_64")
    assert resolution.policy == FLOAT32 and named in resolution.reason


@pytest.mark.parametrize("cap", ["AVX512_CORE_AMX", "avx10_1_512_amx_fp16", "ALL", "default"])
def test_onednn_caps_that_keep_amx(cap):
    assert (
        resolve_cpu(AMX_X86, {"ONEDNN_MAX_CPU_ISA": cap, "TF_ENABLE_ONEDNN_OPTS": "1"}, "x86_64").policy == MIXED_BF16
    )


def test_arm64_needs_the_bf16_feature():
    assert resolve_cpu(frozenset({"asimd", "sve", "bf16"}), {}, "aarch64").policy == MIXED_BF16
    assert resolve_cpu(frozenset({"asimd", "sve"}), {}, "aarch64").policy == FLOAT32
    assert resolve_cpu(AMX_X86, {}, "aarch64").policy == FLOAT32  # x86 flag names mean nothing there


def test_gpus_need_compute_capability_8():
    assert resolve_gpus([(8, 0), (9, 0)]).policy == MIXED_BF16
    assert resolve_gpus([(8, 0), (7, 5)]).policy == FLOAT32  # one older card: float32 for all
    assert resolve_gpus([(7, 0)]).policy == FLOAT32


def test_cpu_flags_reads_x86_and_arm_cpuinfo(tmp_path):
    (tmp_path / "x86").write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert cpu_flags(tmp_path / "x86") == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "arm") == {"fp", "asimd", "bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()  # macOS, Windows: no claim of bf16


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
