"""bf16: true, false or "auto": auto turns bf16 autocast on only where this machine runs it fast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simgan import device as device_mod
from simgan.config import Params, ParamsError, bf16_setting
from simgan.device import autocast, resolve_bf16


@pytest.fixture(autouse=True)
def _no_kernel_caps(monkeypatch):
    """Each test sets the caps it means: none leak in from the shell that runs the suite."""
    for name in device_mod.KERNEL_CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("amx", [True, False])
def test_auto_is_bf16_exactly_on_a_cpu_with_amx(monkeypatch, amx):
    monkeypatch.setattr(device_mod, "cpu_has_amx", lambda: amx)
    assert resolve_bf16("auto", "cpu") is amx
    with autocast("cpu", "auto"):
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert y.dtype == (torch.bfloat16 if amx else torch.float32)


def test_true_and_false_are_kept_whatever_the_cpu(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_has_amx", lambda: False)
    assert resolve_bf16(True, "cpu") is True and resolve_bf16(False, "cpu") is False


def test_a_bad_bf16_value_names_the_key():
    assert bf16_setting("auto") is None and bf16_setting(False) is None
    p = Params({"refine": {"bf16": "yes"}}, "params.yaml")
    with pytest.raises(ParamsError, match=r"params.yaml: key 'refine.bf16': expected true, false or 'auto', got 'yes'"):
        p.get("refine.bf16", (bool, str), bf16_setting)
    with pytest.raises(ValueError, match="bf16"):
        resolve_bf16("fast", "cpu")


@pytest.mark.parametrize(
    "flags, kind",
    [
        ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "amx"),
        ("fpu avx2 avx512f avx512_bf16 amx_bf16", "avx512_bf16"),  # tiles missing: no AMX
        ("fpu avx2 avx512f", "avx512"),
        ("fpu sse4_2 avx2", "avx2"),
        ("fpu sse4_2", "other"),
    ],
)
def test_the_cpu_kind_and_bf16_auto_follow_the_cpu_flags(monkeypatch, tmp_path, flags, kind):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from benchmarks import common

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags\t\t: {flags}\n")
    real_path = device_mod.Path
    monkeypatch.setattr(device_mod, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    device_mod.cpu_flags.cache_clear()
    try:
        assert device_mod.cpu_kind() == kind
        assert common.machine()["cpu_kind"] == kind  # every benchmark result file names it
        assert device_mod.resolve_bf16("auto", "cpu") is (kind == "amx")
    finally:
        device_mod.cpu_flags.cache_clear()


@pytest.mark.parametrize(
    "cpu_amx, cap, kind",
    [
        (True, "AVX2", "avx2"),  # the recipe that gave an AVX2 CPU's bits on an AMX Xeon
        (True, "avx512_core_bf16", "avx512_bf16"),  # oneDNN reads its names in any case
        (True, "AVX10_1_512", "avx512_bf16"),
        (True, "AVX512_CORE", "avx512"),
        (True, "AVX512_CORE_AMX", "amx"),
        (True, "DEFAULT", "amx"),
        (False, "AVX512_CORE_AMX", "avx2"),  # a cap above the CPU changes nothing
    ],
)
def test_onednn_isa_cap_lowers_the_cpu_kind_and_turns_auto_bf16_off_below_amx(monkeypatch, cpu_amx, cap, kind):
    """Under ONEDNN_MAX_CPU_ISA below AMX oneDNN has no AMX kernels, so bf16 would run the slow
    path of a CPU without them: auto must then pick fp32, and the record must name that kind."""
    flags = {"fpu", "avx2"} | ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"} if cpu_amx else set())
    monkeypatch.setattr(device_mod, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert device_mod.cpu_kind() == kind
    assert resolve_bf16("auto", "cpu") is (kind == "amx")
    caps = device_mod.kernel_caps()
    assert caps["cpu_kind"] == kind and caps["ONEDNN_MAX_CPU_ISA"] == cap
    assert (
        caps["MKL_ENABLE_INSTRUCTIONS"] is None and caps["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    )


def test_a_bad_onednn_isa_cap_names_the_variable(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX3")
    with pytest.raises(
        ValueError, match=r"environment variable ONEDNN_MAX_CPU_ISA: expected one of SSE41, .*got 'AVX3'"
    ):
        device_mod.cpu_kind()
