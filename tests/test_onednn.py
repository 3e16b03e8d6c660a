import pytest

from fmnist.nn import onednn


def test_the_cap_is_read_from_either_name_and_normalised():
    assert onednn.max_cpu_isa({}) == ""
    assert onednn.max_cpu_isa({"ONEDNN_MAX_CPU_ISA": " avx2 "}) == "AVX2"
    assert onednn.max_cpu_isa({"DNNL_MAX_CPU_ISA": "avx512_core"}) == "AVX512_CORE"
    assert onednn.max_cpu_isa({"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "ALL"}) == "AVX2"  # the new name wins


@pytest.mark.parametrize(
    ("cap", "keeps"),
    [
        ("ALL", True),
        ("DEFAULT", True),
        ("AVX512_CORE_AMX", True),
        ("AVX10_2_AMX_2", True),
        ("AVX512_CORE_BF16", False),
        ("AVX10_1_512", False),
        ("AVX2", False),
        ("AVX512_CORE_AMMX", False),  # a typo is a cap below AMX, not "no cap"
    ],
)
def test_only_amx_caps_and_no_cap_keep_amx(cap, keeps):
    assert onednn.keeps_amx(cap) is keeps
