"""The selection kernels compile for a CUDA GPU (sm_90, what the H100/H200 are), here on a CPU: triton's whole
pipeline down to the cubin, no device needed. The interpreter the other kernel tests use runs Python, not
what triton compiles, and it does not specialize arguments: compiled, triton turns an integer argument equal
to 1 into a compile-time constant, and budgets_kernel then failed to compile on an H200 whenever a
modality's keep count was 1 (`(video_keep > 0).to(...)` on a Python bool). Each kernel is compiled with no
argument specialized and with each integer argument equal to 1 in turn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

IMPL = Path(__file__).resolve().parents[2] / "seats_fx" / "ops" / "_triton_impl.py"
TARGET = GPUTarget("cuda", 90, 32)

# each kernel's arguments in order: a pointer's element type ("*bf16"), an integer ("i32"), a float ("fp32"),
# or a compile-time constant (its value), as seats_fx.ops.triton_kernels launches them on a 7B-shaped thinker
KERNELS = {
    "greedy_kernel": {"distance": "*fp32", "picks": "*i64", "n": "i32", "k": "i32", "stride_group": "i32",
                      "stride_row": "i32", "BLOCK": 64},
    "relevance_logits_kernel": {
        "query": "*bf16", "keys": "*bf16", "key_mask": "*i64", "logits": "*fp32", "block_max": "*fp32",
        "block_sum": "*fp32", "length": "i32", "scale": "fp32", "q_batch": "i32", "q_head": "i32",
        "k_batch": "i32", "k_head": "i32", "k_pos": "i32", "mask_batch": "i32", "HEADS": 28, "GROUP": 7,
        "DIM": 128, "BLOCK_D": 128, "BLOCK_L": 128, "HAS_MASK": True},
    "relevance_normalize_kernel": {"logits": "*fp32", "block_max": "*fp32", "block_sum": "*fp32", "out": "*fp32",
                                   "length": "i32", "blocks": "i32", "HEADS": 28, "BLOCK_L": 128, "BLOCK_B": 128},
    "budgets_kernel": {"sums": "*fp32", "counts": "*i64", "out": "*i64", "windows": "i32", "sum_row": "i32",
                       "sum_col": "i32", "count_row": "i32", "count_col": "i32", "video_keep": "i32",
                       "audio_keep": "i32", "total": "i32", "temperature_bits": "i64", "BLOCK_W": 32},
    "slot_keep_kernel": {"scores": "*fp32", "slot": "*i64", "limits": "*i64", "keep": "*i8", "length": "i32",
                         "score_stride": "i32", "slot_stride": "i32", "limit_stride": "i32", "BLOCK": 64},
    "kept_positions_kernel": {"keep": "*i8", "out": "*i64", "length": "i32", "count": "i32", "BLOCK": 1024},
}
CASES = [(kernel, one) for kernel, arguments in KERNELS.items()
         for one in [None] + [name for name, kind in arguments.items() if kind in ("i32", "i64")]]


@pytest.fixture(scope="module")
def kernels():
    spec = importlib.util.spec_from_file_location("seats_fx_triton_compiled", IMPL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(kernel, arguments: dict, one: str | None) -> None:
    names = list(arguments)
    signature, constants = {}, {}
    for name, kind in arguments.items():
        if not isinstance(kind, str) or name == one:
            signature[name] = "constexpr"
            constants[(names.index(name),)] = 1 if name == one else kind
        else:
            signature[name] = kind
    triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants), target=TARGET)


@pytest.mark.parametrize("kernel_name,one", CASES, ids=[f"{k}-{o or 'none'}" for k, o in CASES])
def test_kernel_compiles_for_a_gpu_with_any_integer_argument_equal_to_one(kernels, kernel_name, one):
    kernel = getattr(kernels, kernel_name)
    assert [p.name for p in kernel.params] == list(KERNELS[kernel_name]), "the table above is out of date"
    if one is not None and kernel.params[list(KERNELS[kernel_name]).index(one)].do_not_specialize:
        one = None  # triton keeps it an argument (do_not_specialize): compiled as such
    try:
        _compile(kernel, KERNELS[kernel_name], one)
    except (RuntimeError, FileNotFoundError) as error:  # no ptxas for this platform: nothing to say here
        if "ptxas" in str(error):
            pytest.skip(f"triton cannot assemble for CUDA on this machine: {error}")
        raise
