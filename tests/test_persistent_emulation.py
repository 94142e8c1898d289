"""The persistent CUDA kernels (csrc/cuda/persistent.h), run on the CPU through
the SIMT emulation against the CPU ops: every mode and dtype (half and bfloat16
on the emulated tensor cores), dense and packed, both directions, forward and
the backward data recurrence, in the single-block tier and the grid tier
(several co-resident blocks, a grid barrier per step, exchange through a weak
memory model), under random schedules. Then the bugs
such kernels are prone to, planted one at a time, must turn these checks red."""
import os
import shutil

import pytest
import torch

from rnnkern import _ops
from test_cuda_emulation import SIMT, TOLERANCE, compare, layer_args, run_both

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = list(_ops.MODE_IDS)
BIG = 1 << 22  # shared memory for the single-block tier


@pytest.fixture(autouse=True)
def persistent_off_afterwards():
    yield
    SIMT.set_persistent_config(False)
    SIMT.set_launch_config(256, 4096, 1)


def configure(tier, mode, H, B, dtype, sms=3, threads=64, ops=SIMT, **extra):
    """Sets the emulated device so that the layer plans as `tier` ('single' or
    'grid'), forward and backward; returns the number of blocks."""
    mode_id = _ops.MODE_IDS[mode]
    sizes = [BIG] if tier == "single" else [BIG >> s for s in range(1, 16)]
    for smem in sizes:
        ops.set_persistent_config(True, sms, smem, threads, **extra)
        plans = [ops.persistent_plan(bwd, mode_id, H, B, False, dtype, "emulated")
                 for bwd in (False, True)]
        if all(p[0] for p in plans) and all((p[1] == 1) == (tier == "single") for p in plans):
            return plans[0][1]
    raise AssertionError(f"no emulated device makes {mode} H={H} plan as {tier}")


def run_checked(mode, size, packed, dtype, reverse, seed=0, ops=SIMT):
    T, B, I, H = size
    before = ops.persistent_launches()
    results = run_both(layer_args(mode, T, B, I, H, packed, 0, dtype, seed=seed), reverse)
    # forward, backward and backward_data each ran the persistent kernel
    assert ops.persistent_launches() - before == 3
    return results


SIZES = [(4, 5, 7, 33), (3, 1, 2, 40), (5, 3, 3, 21)]  # (T, B, I, H): awkward on purpose


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("tier", ["single", "grid"])
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_persistent_matches_cpu_float64(mode, packed, tier, size):
    T, B, I, H = size
    blocks = configure(tier, mode, H, B, torch.float64)
    assert (blocks == 1) == (tier == "single")
    SIMT.set_launch_config(256, 4096, 3 + H)
    for reverse in (False, True):
        expected, got, g_exp, g_got, d_exp, d_got = run_checked(
            mode, size, packed, torch.float64, reverse, seed=T + H)
        compare(expected, got, torch.float64)
        compare(g_exp, g_got, torch.float64)
        compare(d_exp, d_got, torch.float64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_persistent_matches_cpu_other_dtypes(mode, dtype, packed):
    configure("grid", mode, 19, 4, dtype)
    expected, got, g_exp, g_got, _, _ = run_checked(mode, (3, 4, 5, 19), packed, dtype, True)
    compare(expected, got, dtype)
    compare(g_exp, g_got, dtype)


def test_persistent_results_do_not_depend_on_the_schedule():
    # A fixed order of summation per element: any race shows as a bit difference.
    configure("grid", "LSTM", 33, 5, torch.float32)
    runs = []
    for seed in range(1, 6):
        SIMT.set_launch_config(256, 4096, seed)
        runs.append(run_checked("LSTM", (4, 5, 3, 33), True, torch.float32, False))
    for other in runs[1:]:
        for a, b in zip(runs[0][1] + runs[0][3], other[1] + other[3]):
            assert torch.equal(a, b)


def test_larger_batch_than_a_tile_and_more_blocks_than_warps():
    # 21 rows: two passes of 16 over the weights per step; 5 blocks of 2 warps.
    configure("grid", "GRU", 37, 21, torch.float64, sms=5)
    expected, got, g_exp, g_got, _, _ = run_checked("GRU", (3, 21, 4, 37), False,
                                                    torch.float64, False)
    compare(expected, got, torch.float64)
    compare(g_exp, g_got, torch.float64)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype,cache", [
    (dtype, cache) for dtype in (torch.float64, torch.bfloat16) for cache in (0, 7, -1)] + [
    (torch.float32, 7)], ids=str)
def test_register_cache_and_split_products(mode, dtype, cache):
    # 8 warps a block and 12 units a block: the backward's 3 row groups leave
    # warps over for slices of K (bf16: one row group of 16, more slices); each
    # lane keeps none, 7 (in fp64's forward its first item's 5 chunks and 2 of
    # its second's) or all of its items' weights in registers.
    H, size = 140, (3, 3, 5, 140)
    configure("grid", mode, H, 3, dtype, sms=12, threads=256, register_cache=cache)
    plans = [SIMT.persistent_plan(bwd, _ops.MODE_IDS[mode], H, 3, False, dtype, "emulated")
             for bwd in (False, True)]
    if mode in ("LSTM", "GRU"):  # K = G * H: the backward's product splits it
        assert plans[1][7] > 1
    # float32 sums of 140 products in another order than the CPU's
    tol = 1e-4 if dtype == torch.float32 else TOLERANCE[dtype]
    for reverse in (False, True):
        for want, have in zip(*[iter(run_checked(mode, size, True, dtype, reverse))] * 2):
            for a, b in zip(want, have):
                torch.testing.assert_close(b, a, atol=tol, rtol=tol)


def test_oversized_grid_is_reported_as_a_deadlock():
    blocks = configure("grid", "LSTM", 33, 2, torch.float64)
    SIMT.set_persistent_config(True, 3, SIMT.persistent_plan(False, 2, 33, 2, False,
                                                             torch.float64, "emulated")[5],
                               64, blocks - 1)
    args = layer_args("LSTM", 3, 2, 3, 33, False, 0, torch.float64) + [False, True]
    with pytest.raises(RuntimeError, match="deadlock.*never started.*co-resident"):
        SIMT.layer_forward(*args)


# ---- planted bugs -----------------------------------------------------------

MUTATIONS = {  # file: (text, replacement); the replacement reads RNNKERN_MUTATION
    "cuda/persistent.h": [(
        "grid_barrier(p.barrier, static_cast<unsigned>(s + 1), ",
        "if (rk_mutation() == 1) __syncthreads(); "
        "else grid_barrier(p.barrier, static_cast<unsigned>(s + 1), ")],
    "cuda/grid_sync.h": [(
        "__threadfence();\n    atomicAdd(counter, 1u);",
        "if (rk_mutation() != 2) __threadfence();\n    atomicAdd(counter, 1u);")],
    "cuda/persistent_common.h": [
        ("__shfl_xor_sync(0xffffffffu, v, offset)",
         "__shfl_xor_sync(0xffffffffu, v, rk_mutation() == 3 && offset == 1 ? 0 : offset)")],
    "cuda/onchip_product.h": [
        # the weights read from shared memory after the cached ones one chunk off
        ("k = k0 + lane + 32 * own;", "k = k0 + lane + 32 * (own + (rk_mutation() == 5));"),
        # the last split's partial sums left out
        ("s < L.split.splits;", "s < L.split.splits - (rk_mutation() == 6);")],
    "cuda/tensor_core.h": [
        ("cache[j][1] = in ? pair_at(wg + 8 * K)",
         "cache[j][1] = in ? pair_at(wg + (rk_mutation() == 4 ? 8 : 8 * K))"),
        ("pair_at(wg + 8 * K + kk)", "pair_at(wg + (rk_mutation() == 7 ? 8 : 8 * K) + kk)")],
    "cuda/persistent_wavefront.h": [
        # every layer at the same step, not a step behind
        ("const int64_t t = s - layer;", "const int64_t t = s - (rk_mutation() == 8 ? 0 : layer);"),
        # backward: a layer one step behind the one above, not two (no barrier
        # between the gradient of its output written and read)
        ("lag = 2 * (a.count - 1 - layer);",
         "lag = (rk_mutation() == 9 ? 1 : 2) * (a.count - 1 - layer);")],
}
MUTATION_HEADER = """#pragma once
#include <cstdlib>
inline int rk_mutation() {
  const char* m = std::getenv("RNNKERN_MUTATION");
  return m ? std::atoi(m) : 0;
}
"""


@pytest.fixture(scope="module")
def mutant(tmp_path_factory):
    """The emulated ops built from a copy of csrc/ carrying every planted bug,
    each switched on by RNNKERN_MUTATION=<n> (0: none)."""
    from torch.utils import cpp_extension
    tmp = tmp_path_factory.mktemp("mutant")
    src = tmp / "csrc"
    shutil.copytree(os.path.join(ROOT, "csrc"), src)
    for name, edits in MUTATIONS.items():
        path = src / name
        text = path.read_text()
        for old, new in edits:
            assert text.count(old) >= 1, f"the mutation of {name} no longer applies"
            text = text.replace(old, new)
        path.write_text(text)
    (src / "mutation.h").write_text(MUTATION_HEADER)
    build = tmp / "build"
    build.mkdir()
    name = "rnnkern_simt_planted"
    cpp_extension.load(
        name=name, build_directory=str(build), is_python_module=False, verbose=False,
        sources=[str(src / "simt" / "emulated_ops.cpp"), str(src / "core" / "layer_checks.cpp")],
        extra_cflags=["-O1", "-g0", f"-DRNNKERN_SIMT_OPS={name}", "-include",
                      str(src / "mutation.h")])
    yield getattr(torch.ops, name)
    os.environ.pop("RNNKERN_MUTATION", None)


def caught(ops, mutation, mode="GRU", seeds=range(1, 9), dtype=torch.float64, H=33,
           backward=False, **config):
    """How many schedules of the mutant disagree with the CPU op (or fail):
    the forward, and with `backward` the backward too."""
    os.environ["RNNKERN_MUTATION"] = str(mutation)
    configure("grid", mode, H, 3, dtype, ops=ops, **config)
    tol = TOLERANCE[dtype]
    hits = 0

    def same(a, b):
        return all(x is None or torch.allclose(x, y, atol=tol, rtol=tol) for x, y in zip(a, b))

    try:
        for seed in seeds:
            ops.set_launch_config(256, 4096, seed)
            args = layer_args(mode, 4, 3, 3, H, False, 0, dtype, seed=seed)
            fwd = args + [False, True]
            expected = torch.ops.rnnkern.layer_forward(*fwd)
            try:
                got = ops.layer_forward(*fwd)
                if not backward:
                    hits += not same(expected[:3], got[:3])
                    continue
                grads = [torch.ones_like(t) for t in expected[:3]]
                bwd = [args[0], args[1], args[2], args[5], args[6], args[9], expected[0],
                       *expected[3:], *grads, False, 3, [True, True, True, True]]
                hits += not same(torch.ops.rnnkern.layer_backward(*bwd), ops.layer_backward(*bwd))
            except RuntimeError:
                hits += 1
    finally:
        os.environ["RNNKERN_MUTATION"] = "0"
        ops.set_persistent_config(False)
    return hits


def test_planted_bugs_are_caught(mutant):
    assert caught(mutant, 0) == 0  # the unmutated copy agrees
    assert caught(mutant, 1) > 0, "a removed grid barrier went unnoticed"
    assert caught(mutant, 2) > 0, "a removed release fence went unnoticed"
    assert caught(mutant, 3) > 0, "a wrong shuffle lane went unnoticed"
    assert caught(mutant, 0, dtype=torch.bfloat16, seeds=range(1, 3)) == 0
    assert caught(mutant, 4, dtype=torch.bfloat16, seeds=range(1, 3)) > 0, \
        "a wrong mma fragment index (in the registers) went unnoticed"
    assert caught(mutant, 7, dtype=torch.bfloat16, seeds=range(1, 3), register_cache=0) > 0, \
        "a wrong mma fragment index (in shared memory) went unnoticed"
    assert caught(mutant, 5, seeds=range(1, 3), register_cache=1) > 0, \
        "weights skipped after the register cache went unnoticed"
    big = dict(seeds=range(1, 3), H=140, threads=256, sms=12, backward=True)
    assert caught(mutant, 0, **big) == 0
    assert caught(mutant, 6, **big) > 0, "a split's partial sums left out went unnoticed"
    assert not wavefront_caught(mutant, 0)
    assert wavefront_caught(mutant, 8), "layers of a wavefront in step went unnoticed"
    assert wavefront_caught(mutant, 9), "a backward wavefront's missing barrier went unnoticed"


def wavefront_caught(ops, mutation):
    """Whether a 3-layer stack's forward or backward on the mutant differs
    from the CPU op's (in some of 3 schedules)."""
    os.environ["RNNKERN_MUTATION"] = str(mutation)
    try:
        configure_wavefront("LSTM", 21, 3, 3, ops=ops)
        args = _one_direction_stack("LSTM", 5, 3, 4, 21, 3, False, 0.0)
        want = sum(_stack_forward_and_backward(_ops, args, 3), ())
        for seed in range(1, 4):
            ops.set_launch_config(256, 4096, seed)
            try:
                got = sum(_stack_forward_and_backward(ops, args, 3), ())
            except RuntimeError:
                return True
            if not all(a is None or torch.allclose(a, b, atol=1e-4, rtol=1e-4)
                       for a, b in zip(want, got)):
                return True
        return False
    finally:
        os.environ["RNNKERN_MUTATION"] = "0"
        ops.set_persistent_config(False)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("refused", [False, True], ids=["paired", "refused"])
def test_bidirectional_forward_runs_both_directions_in_one_grid(mode, packed, dtype, refused):
    # Half the SMs per direction: two groups of blocks side by side, one launch;
    # when the device refuses that grid, the waiting direction runs alone first.
    T, B, I, H = 5, 3, 4, 33
    configure("grid", mode, H, B, dtype, sms=6, refuse_pairs=refused)
    first = layer_args(mode, T, B, I, H, packed, 0, dtype, seed=1)
    second = layer_args(mode, T, B, I, H, packed, 0, dtype, seed=2)
    args = [*first[:3], first[3:10], second[3:10], True]
    before = SIMT.persistent_launches()
    got = SIMT.layer_forward_bidirectional(*args)
    assert SIMT.persistent_launches() - before == (2 if refused else 1)
    expected = torch.ops.rnnkern.layer_forward_bidirectional(*args)
    for want, have in zip(expected, got):
        compare(want, have, dtype)


def _bidirectional_backward_args(mode, packed, dtype):
    """layer_backward_bidirectional's arguments for two directions of different
    weights over one input, from the CPU op's forward."""
    T, B, I, H = 5, 3, 4, 33
    first = layer_args(mode, T, B, I, H, packed, 0, dtype, seed=1)
    second = layer_args(mode, T, B, I, H, packed, 0, dtype, seed=2)
    mode_id, x, batch_sizes = first[:3]
    gen = torch.Generator().manual_seed(7)
    directions = []
    for d, a in enumerate((first, second)):
        fwd = torch.ops.rnnkern.layer_forward(mode_id, x, batch_sizes, *a[3:], d == 1, True)
        grads = [torch.randn(t.shape, generator=gen).to(t.dtype) if t.numel() else None
                 for t in fwd[:3]]
        directions.append([a[5], a[6], a[9], fwd[0], *fwd[3:], *grads])
    return [mode_id, x, batch_sizes, directions[0], directions[1], B, [True, True, True, True]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("refused", [False, True], ids=["paired", "refused"])
def test_bidirectional_backward_runs_both_loops_in_one_grid(mode, packed, dtype, refused):
    # The two directions' backward loops side by side in one launch, then each
    # one's weight gradients; refused, the waiting loop runs alone first.
    configure("grid", mode, 33, 3, dtype, sms=6, refuse_pairs=refused)
    args = _bidirectional_backward_args(mode, packed, dtype)
    before = SIMT.persistent_launches()
    got = SIMT.layer_backward_bidirectional(*args)
    assert SIMT.persistent_launches() - before == (2 if refused else 1)
    expected = torch.ops.rnnkern.layer_backward_bidirectional(*args)
    for want, have in zip(expected, got):
        compare(want, have, dtype)


@pytest.mark.parametrize("mode", MODES)
def test_stack_backward_pairs_each_bidirectional_layer(mode):
    # A 2-layer bidirectional stack: one launch per layer for its two loops.
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    T, B, I, H, L = 5, 3, 4, 33, 2
    configure("grid", mode, H, B, torch.float64, sms=6)
    gen = torch.Generator().manual_seed(3)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64) * 0.5  # noqa: E731
    weights = []
    for layer in range(L):
        for _ in range(2):
            weights += [rand(G * H, I if layer == 0 else 2 * H), rand(G * H, H), rand(G * H),
                        rand(G * H), None]
    cx = rand(2 * L, B, H) if mode == "LSTM" else None
    args = (_ops.MODE_IDS[mode], rand(T, B, I), None, rand(2 * L, B, H), cx, weights, L, True,
            0.0, True)
    output, h_n, c_n, saved = _ops.stack_forward(*args)
    grads = [rand(*output.shape), rand(*h_n.shape), rand(*c_n.shape) if mode == "LSTM" else None]
    backward_args = (args[0], args[1], args[2], args[5], output, saved, *grads, *args[6:9], B,
                     [True, True, True, True])
    before = SIMT.persistent_launches()
    got = SIMT.stack_backward(*backward_args)
    assert SIMT.persistent_launches() - before == L
    want = _ops.stack_backward(*backward_args)
    for a, b in zip((*got[:3], *got[3]), (*want[:3], *want[3])):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


# ---- stacked layers as a wavefront in one launch ----------------------------

def configure_wavefront(mode, H, B, layers, per_layer=2, threads=64, ops=SIMT):
    """An emulated device on which the float stack's layers run as one grid of
    `per_layer` blocks each."""
    for smem in [BIG >> s for s in range(1, 16)]:
        ops.set_persistent_config(True, layers * per_layer, smem, threads)
        used, blocks = ops.wavefront_plan(_ops.MODE_IDS[mode], H, B, layers)[:2]
        if used and blocks == per_layer:
            return
    raise AssertionError(f"no emulated device runs {mode} H={H} as a wavefront")


def _one_direction_stack(mode, T, B, I, H, L, packed, dropout, seed=5):
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen) * 0.5  # noqa: E731
    weights = []
    for layer in range(L):
        weights += [rand(G * H, I if layer == 0 else H), rand(G * H, H), rand(G * H),
                    rand(G * H), None]
    if packed:
        batch_sizes = torch.tensor([B] * 2 + [B - 1] * (T - 3) + [1])
        x = rand(int(batch_sizes.sum()), I)
    else:
        batch_sizes, x = None, rand(T, B, I)
    cx = rand(L, B, H) if mode == "LSTM" else None
    return (_ops.MODE_IDS[mode], x, batch_sizes, rand(L, B, H), cx, weights, L, False, dropout,
            True)


def _stack_forward_and_backward(ops, args, B):
    torch.manual_seed(11)  # the same dropout noise for both
    output, h_n, c_n, saved = ops.stack_forward(*args)
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(t.shape, generator=gen).to(t.dtype) if t.numel() else None
             for t in (output, h_n, c_n)]
    backward_args = (args[0], args[1], args[2], args[5], output, saved, *grads, *args[6:9], B,
                     [True, True, True, True])
    got = ops.stack_backward(*backward_args)
    return (output, h_n, c_n), (*got[:3], *got[3])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_stack_runs_as_a_wavefront_in_one_launch(mode, packed, dropout):
    T, B, I, H, L = 6, 3, 5, 21, 3
    configure_wavefront(mode, H, B, L)
    SIMT.set_launch_config(256, 4096, 7)
    args = _one_direction_stack(mode, T, B, I, H, L, packed, dropout)
    before = SIMT.persistent_launches()
    torch.manual_seed(11)
    SIMT.stack_forward(*args)
    assert SIMT.persistent_launches() - before == 1, "the whole stack's forward is one launch"
    before = SIMT.persistent_launches()
    assert_as_close_as_the_cpu(args, B)
    assert SIMT.persistent_launches() - before == 2, "its forward and backward: one launch each"


def assert_as_close_as_the_cpu(args, B):
    """The emulated GPU's float32 results are about as close to float64 ones
    (the CPU op's) as the CPU op's float32 results (within 4x + 1e-5): the
    tanh RNN's 3-layer gradients differ from the exact ones by 1e-4 on both."""
    double = [t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
              for t in args]
    double[5] = [w.double() if w is not None else None for w in args[5]]
    exact = _stack_forward_and_backward(_ops, tuple(double), B)
    want = _stack_forward_and_backward(_ops, args, B)
    got = _stack_forward_and_backward(SIMT, args, B)
    for e, w, g in zip(sum(exact, ()), sum(want, ()), sum(got, ())):
        if e is None or not e.numel():
            continue
        cpu_error = (w.double() - e).abs().max().item()
        assert (g.double() - e).abs().max().item() <= 4 * cpu_error + 1e-5


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_refused_wavefront_runs_layer_by_layer(dropout):
    # A device that refuses grids of more than 2 blocks, with shared memory
    # for one layer's W_hh in one block but not beside its W_ih: the stack's
    # grids of 2 x 2 (forward and backward) are refused, and each layer runs
    # its own launches.
    T, B, I, H, L = 4, 2, 3, 21, 2
    gru = _ops.MODE_IDS["GRU"]
    for size in range(4096, 1 << 16, 512):
        SIMT.set_persistent_config(True, 2 * L, size, 64, max_grid=2)
        if SIMT.wavefront_plan(gru, H, B, L)[:2] == [1, 2] and \
                SIMT.persistent_plan(False, gru, H, B, False, torch.float32, "emulated")[1] == 1:
            break
    else:
        raise AssertionError("no such emulated device")
    args = _one_direction_stack("GRU", T, B, I, H, L, False, dropout)
    before = SIMT.persistent_launches()
    torch.manual_seed(11)
    SIMT.stack_forward(*args)
    assert SIMT.persistent_launches() - before == L
    before = SIMT.persistent_launches()
    assert_as_close_as_the_cpu(args, B)
    assert SIMT.persistent_launches() - before == 2 * L
