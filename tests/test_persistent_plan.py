"""The heuristic that picks the persistent kernels' tier and grid
(csrc/cuda/persistent_plan.h), for the GPUs they are built for: what it
chooses, and that every grid it would launch fits the device (shared memory,
registers at the launch bound, co-residency of all blocks for the grid
barrier). The same code plans the CUDA launches; the CUDA launcher also asks
the driver for the occupancy before launching."""
import itertools

import pytest
import torch

from rnnkern import _ops
import rnnkern._simt  # noqa: F401

SIMT = torch.ops.rnnkern_simt
DEVICES = {"A100": (108, 163 * 1024), "H100": (132, 227 * 1024)}
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
PERSISTENT_THREADS, REGISTER_FILE, MAX_REGISTERS = 256, 65536, 255


def plan(mode, H, B, dtype=torch.float32, device="H100", backward=False, proj=False):
    used, blocks, units, threads, tile, smem, resident, splits, classes = SIMT.persistent_plan(
        backward, _ops.MODE_IDS[mode], H, B, proj, dtype, device)
    return dict(used=bool(used), blocks=blocks, units=units, threads=threads, tile=tile,
                smem=smem, resident=resident, splits=splits, classes=classes)


def test_tiers():
    # Small H: all of W_hh in one block, no grid barrier.
    assert plan("LSTM", 64, 8)["blocks"] == 1
    assert plan("GRU", 96, 1, torch.bfloat16)["blocks"] == 1
    # Larger H: about one block per SM.
    p = plan("LSTM", 768, 16)
    assert p["used"] and p["blocks"] == 128 and p["units"] == 6
    assert plan("LSTM", 768, 16, device="A100")["blocks"] == 96
    # fp32 LSTM H=1024 needs 16 MiB of W_hh: fits H100's shared memory, not A100's.
    assert plan("LSTM", 1024, 16)["used"]
    assert not plan("LSTM", 1024, 16, device="A100")["used"]
    assert plan("LSTM", 1024, 16, torch.bfloat16, device="A100")["used"]
    # Not taken: projections, large batches (sooner for larger H), W_hh beyond the chip.
    assert not plan("LSTM", 256, 8, proj=True)["used"]
    assert plan("GRU", 256, 64)["used"] and not plan("GRU", 256, 65)["used"]
    assert plan("GRU", 768, 16)["used"] and not plan("GRU", 768, 17)["used"]
    assert not plan("LSTM", 2048, 1)["used"]


def test_tile_shrinks_before_giving_up():
    # Backward stages rows of all 4H gate gradients: 16 of them would not fit
    # beside W_hh's columns.
    p = plan("LSTM", 1024, 16, backward=True)
    assert p["used"] and p["tile"] < 16 and p["smem"] <= 227 * 1024
    assert plan("LSTM", 1024, 16)["tile"] == 16


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("H", [256, 768, 1024])
def test_products_split_k_where_rows_are_few(mode, H, dtype):
    # The backward holds U <= 8 rows a block (fp32: 2 row groups of 4; tensor
    # cores: one of 16): its product splits K over the warps, on tensor cores
    # (where a warp's mma.sync chain is serial) into at least 4 slices.
    for B in (1, 16):
        p = plan(mode, H, B, dtype, backward=True)
        if not p["used"] or p["blocks"] == 1:
            continue
        assert p["units"] <= 8
        assert p["splits"] >= (4 if dtype == torch.bfloat16 else 2), (B, p)
    # The forward of LSTM H=768 in fp32 (6 row groups of 4 over 4 schedulers)
    # does not split; its backward (2 row groups, K = 3072) does.
    assert plan("LSTM", 768, 1)["splits"] == 1
    assert plan("LSTM", 768, 1, backward=True)["splits"] == 2


GPU_GRID = list(itertools.product(_ops.MODE_IDS, [256, 768, 1024], [1, 8, 16, 64, 256],
                                  DTYPES, DEVICES, [False, True]))


@pytest.mark.parametrize("mode,H,B,dtype,device,backward", GPU_GRID)
def test_every_planned_grid_fits_the_device(mode, H, B, dtype, device, backward):
    sms, smem_per_block = DEVICES[device]
    p = plan(mode, H, B, dtype, device, backward)
    if not p["used"]:
        return
    assert p["blocks"] * p["units"] >= H > (p["blocks"] - 1) * p["units"]
    assert p["blocks"] <= sms  # at most one block per SM
    assert p["smem"] <= smem_per_block
    assert p["threads"] % 32 == 0 and p["threads"] <= PERSISTENT_THREADS
    assert p["threads"] * MAX_REGISTERS <= REGISTER_FILE
    assert p["blocks"] <= p["resident"], "the grid barrier needs every block co-resident"
    # 1024 steps of one barrier each fit the 32-bit barrier counter
    assert 1024 * p["blocks"] < 2 ** 32


@pytest.mark.parametrize("device", DEVICES)
def test_wavefront_plans(device):
    # A float stack's layers in one grid, forward and backward: each layer on
    # its share of the SMs with W_ih beside W_hh, all layers' blocks at most
    # one per SM; not taken where that would shrink the rows per pass below a
    # single layer's.
    sms, smem_per_block = DEVICES[device]
    for mode, H, B, layers, backward in itertools.product(
            _ops.MODE_IDS, [64, 256, 768], [1, 16], [2, 3], [False, True]):
        used, blocks, units, tile, splits, classes = SIMT.wavefront_plan(
            _ops.MODE_IDS[mode], H, B, layers, device, backward)
        if not used:
            continue
        assert layers * blocks <= sms and blocks * units >= H
        alone = plan(mode, H, B, torch.float32, device, backward)
        assert alone["used"] and tile == alone["tile"]
    # LSTM H=256, 3 layers: a third of the SMs each (H100 44: 6 units a block;
    # A100 36: 8); GRU H=768, B=16, 2 layers: the tile would shrink.
    lstm, gru = _ops.MODE_IDS["LSTM"], _ops.MODE_IDS["GRU"]
    assert SIMT.wavefront_plan(lstm, 256, 1, 3, device)[:3] == \
        ([1, 43, 6] if device == "H100" else [1, 32, 8])
    assert not SIMT.wavefront_plan(gru, 768, 16, 2, device)[0]
    assert SIMT.wavefront_plan(lstm, 256, 1, 3, device, True)[:2] == \
        ([1, 43] if device == "H100" else [1, 32])
