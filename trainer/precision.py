"""Compute precision: bfloat16 autocast over float32 weights.

On a GPU the forward and backward passes always run in bfloat16 (trainer.models.resolve_dtype).
On a CPU, ``cpu_bf16`` decides: ``off`` (float32, the default), ``on`` (bfloat16 autocast),
``auto`` (bfloat16 where the processor has bfloat16 instructions, :data:`NATIVE_BF16`; float32 on
processors without them, where oneDNN would emulate bfloat16 with AVX-512 and run slower than
float32). The weights and AdamW's state stay float32 either way: a step at lr 1e-6 is below
bfloat16's resolution. The trainer logs the log-prob gap bfloat16 introduces
(:func:`logprob_gap`).
"""

from __future__ import annotations

import contextlib

import torch

from trainer.registry import choose

# cpuinfo's names (torch.cpu.get_capabilities) of bfloat16 instructions: AVX512_BF16 and AMX-BF16
# on x86, the Armv8.6 BF16 extension and SVE's on Arm.
NATIVE_BF16 = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def cpu_features() -> dict:
    """The processor's features as torch's cpuinfo reports them (``torch.cpu.get_capabilities``);
    empty on a torch that does not have it."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    return dict(capabilities()) if capabilities is not None else {}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (:data:`NATIVE_BF16`) and oneDNN runs bfloat16
    on it. oneDNN's own check alone (``torch.ops.mkldnn._is_mkldnn_bf16_supported``, ideep's
    ``has_bf16_type_support``: an ISA of at least avx512_core) is also true on AVX-512 processors
    without them, where it emulates bfloat16; on a torch without cpuinfo's report it is all
    there is to go by."""
    onednn = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    features = cpu_features()
    return onednn and (not features or any(features.get(name) for name in NATIVE_BF16))


# cpu_bf16 -> whether a CPU computes in bfloat16 (the names: trainer.option_names.CPU_BF16);
# ``auto`` asks cpu_has_native_bf16 at each call, so that a test can force either answer
CPU_BF16 = {"off": lambda: False, "on": lambda: True, "auto": lambda: cpu_has_native_bf16()}


def compute_dtype(device: torch.device, cpu_bf16: str = "off") -> torch.dtype:
    """The dtype the forward and backward passes compute in on ``device``."""
    cpu_in_bf16 = choose(CPU_BF16, cpu_bf16, "cpu_bf16")
    if device.type == "cuda" or (device.type == "cpu" and cpu_in_bf16()):
        return torch.bfloat16
    return torch.float32


def compute_context(device: torch.device, cpu_bf16: str = "off"):
    """Autocast to :func:`compute_dtype` (a no-op context when that is float32)."""
    if compute_dtype(device, cpu_bf16) == torch.bfloat16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def logprob_gap(reduced: torch.Tensor, exact: torch.Tensor, mask: torch.Tensor) -> dict:
    """Mean and max |log pi_bf16 - log pi_fp32| over the completion tokens ``mask``."""
    gap = (reduced.float() - exact.float())[mask].abs()
    if not gap.numel():
        return {}
    return {"precision/bf16_logprob_gap_mean": float(gap.mean()), "precision/bf16_logprob_gap_max": float(gap.max())}
