"""bf16: true, false or "auto": auto turns bf16 autocast on only where this machine runs it fast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simgan import device as device_mod
from simgan.config import Params, ParamsError, bf16_setting
from simgan.device import autocast, resolve_bf16


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
