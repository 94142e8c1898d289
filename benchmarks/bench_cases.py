"""The benchmark cases: what runs, on which input, against which baselines, and its FLOP count.

A case is one configuration (a mode and a size). For each case, ``build_runners``
returns, per phase, one zero-argument callable per implementation: rnnkern and
the torch.nn baselines, all holding the same weights and fed the same input.
"""
import contextlib
import dataclasses
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkern

# Harmless warnings torch prints while the baselines run: disabling oneDNN through its flags
# context mentions TF32 on Intel GPUs, and torch.nn's LSTM with proj_size says oneDNN does not
# take it.
warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN",
                        category=UserWarning)
warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN",
                        category=UserWarning)

Size = Tuple[int, int, int, int]  # (T, B, I, H)

GRID_SIZES: List[Size] = [(100, 1, 128, 128), (100, 1, 256, 256), (100, 1, 512, 512),
                          (100, 4, 256, 256), (100, 32, 256, 256), (100, 64, 512, 512),
                          (50, 16, 128, 1024)]
QUICK_SIZES: List[Size] = [(100, 1, 256, 256), (100, 32, 256, 256)]
BIDIR_SIZES: List[Size] = [(100, 1, 256, 256), (100, 32, 256, 256)]
STACK_SIZES: List[Size] = [(100, 1, 64, 64), (100, 1, 128, 128), (100, 4, 128, 128)]
CELL_SIZES: List[Size] = [(100, 1, 256, 256), (100, 32, 256, 256)]
QUICK_CELL_SIZES: List[Size] = [(100, 32, 256, 256)]

PHASES = ("forward", "fwd+bwd")

# What --modes accepts. CELLS stands for the three cells stepped in a Python loop.
MODE_HELP = {
    "RNN_TANH": "torch.nn.RNN (tanh)",
    "LSTM": "torch.nn.LSTM",
    "GRU": "torch.nn.GRU",
    "LSTM_PROJ": "LSTM with proj_size = H // 2",
    "PACKED": "LSTM fed a PackedSequence of B sequences, lengths between T/2 and T, unsorted",
    "LSTM_BIDIR2": "2-layer bidirectional LSTM",
    "GRU_BIDIR2": "2-layer bidirectional GRU",
    "STACK2": "2-layer RNN (tanh), LSTM and GRU, one direction (small ones run as a wavefront)",
    "CELLS": "RNNCell (tanh), LSTMCell, GRUCell stepped in a Python loop over T steps",
}
MODES = list(MODE_HELP)
QUICK_MODES = ["RNN_TANH", "LSTM", "GRU", "CELLS"]

# module name -> (torch.nn class, rnnkern class, constructor extras, gates per step)
MODULES = {
    "RNN": (nn.RNN, rnnkern.RNN, {"nonlinearity": "tanh"}, 1),
    "LSTM": (nn.LSTM, rnnkern.LSTM, {}, 4),
    "GRU": (nn.GRU, rnnkern.GRU, {}, 3),
    "RNNCell": (nn.RNNCell, rnnkern.RNNCell, {"nonlinearity": "tanh"}, 1),
    "LSTMCell": (nn.LSTMCell, rnnkern.LSTMCell, {}, 4),
    "GRUCell": (nn.GRUCell, rnnkern.GRUCell, {}, 3),
}


@dataclasses.dataclass(frozen=True)
class Case:
    mode: str            # the name reported: RNN_TANH, LSTM, ..., or a cell's class name
    module: str          # a key of MODULES
    size: Size
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    packed: bool = False

    @property
    def is_cell(self) -> bool:
        return self.module.endswith("Cell")

    @property
    def is_lstm(self) -> bool:
        return self.module.startswith("LSTM")

    @property
    def label(self) -> str:
        T, B, I, H = self.size
        shape = f"T{T} B{B} I{I} H{H}" + (f" P{self.proj_size}" if self.proj_size else "")
        if self.is_cell:
            return f"{self.mode} loop {shape}"
        if self.bidirectional or self.num_layers > 1:
            bidir = " bidir" if self.bidirectional else ""
            return f"{self.module} {self.num_layers}-layer{bidir} {shape}"
        return f"{self.mode} {shape}"


def cases_for_mode(mode: str, sizes: List[Size]) -> List[Case]:
    if mode == "RNN_TANH":
        return [Case("RNN_TANH", "RNN", s) for s in sizes]
    if mode in ("LSTM", "GRU"):
        return [Case(mode, mode, s) for s in sizes]
    if mode == "LSTM_PROJ":
        return [Case(mode, "LSTM", s, proj_size=s[3] // 2) for s in sizes]
    if mode == "PACKED":
        return [Case(mode, "LSTM", s, packed=True) for s in sizes]
    if mode in ("LSTM_BIDIR2", "GRU_BIDIR2"):
        return [Case(mode, mode[:-7], s, num_layers=2, bidirectional=True) for s in sizes]
    if mode == "STACK2":
        return [Case(m, m, s, num_layers=2) for s in sizes for m in ("RNN", "LSTM", "GRU")]
    if mode == "CELLS":
        return [Case(cell, cell, s) for s in sizes for cell in ("RNNCell", "LSTMCell", "GRUCell")]
    raise ValueError(f"unknown mode {mode}")


def default_sizes(mode: str, quick: bool) -> List[Size]:
    if mode in ("LSTM_BIDIR2", "GRU_BIDIR2"):
        return BIDIR_SIZES
    if mode == "STACK2":
        return STACK_SIZES
    if mode == "CELLS":
        return QUICK_CELL_SIZES if quick else CELL_SIZES
    return QUICK_SIZES if quick else GRID_SIZES


def build_grid(modes: List[str], sizes: Optional[List[Size]], quick: bool) -> List[Case]:
    """The cases to run: each mode at the sizes given, or at its default sizes."""
    cases = []
    for mode in modes:
        cases += cases_for_mode(mode, sizes or default_sizes(mode, quick))
    return cases


# ---------------------------------------------------------------------------- FLOPs

def packed_lengths(T: int, B: int) -> List[int]:
    """B lengths spread evenly from T down to T/2, in a fixed shuffled order."""
    lengths = [T - (T // 2) * i // max(B - 1, 1) for i in range(B)]
    order = torch.randperm(B, generator=torch.Generator().manual_seed(1)).tolist()
    return [lengths[i] for i in order]


def real_rows(case: Case) -> int:
    """Rows (time steps x sequences) that carry data: all T*B, or the packed lengths' sum."""
    T, B, _, _ = case.size
    return sum(packed_lengths(T, B)) if case.packed else T * B


def forward_flops(case: Case) -> float:
    """FLOPs of the forward GEMMs: per step the input and the recurrent GEMM, plus the
    projection GEMM with proj_size; the pointwise gate math is left out."""
    _, _, I, H = case.size
    gates = MODULES[case.module][3]
    directions = 2 if case.bidirectional else 1
    recurrent_size = case.proj_size or H
    rows = real_rows(case)
    total = 0.0
    for layer in range(case.num_layers):
        input_size = I if layer == 0 else recurrent_size * directions
        per_row = (input_size + recurrent_size) * gates * H + H * case.proj_size
        total += 2.0 * rows * per_row * directions
    return total


def recurrent_bytes(case: Case, element_bytes: int) -> int:
    """Bytes of one layer-direction's recurrent weights (W_hh, and W_hr with a
    projection): what a step of a small batch must read."""
    _, _, _, H = case.size
    gates = MODULES[case.module][3]
    recurrent_size = case.proj_size or H
    return element_bytes * (gates * H * recurrent_size + case.proj_size * H)


def bandwidth_bound_seconds(case: Case, phase: str, gbps: float, element_bytes: int) -> float:
    """The time to read every layer-direction's recurrent weights once per step
    (twice with backward, whose recurrence reads W_hh again) at gbps."""
    T = case.size[0]
    directions = 2 if case.bidirectional else 1
    reads = T * case.num_layers * directions * (2 if phase == "fwd+bwd" else 1)
    return reads * recurrent_bytes(case, element_bytes) / (gbps * 1e9)


def phase_flops(case: Case, phase: str) -> float:
    # The backward pass runs two GEMMs for each forward one (input and weight gradients).
    return forward_flops(case) * (3 if phase == "fwd+bwd" else 1)


# ---------------------------------------------------------------------------- runners

def make_modules(case: Case, device: str, dtype: torch.dtype) -> Tuple[nn.Module, nn.Module]:
    """(torch.nn module, rnnkern module) with the same weights, on device in dtype."""
    ref_cls, our_cls, extra, _ = MODULES[case.module]
    _, _, I, H = case.size
    kwargs = dict(extra)
    if not case.is_cell:
        kwargs.update(num_layers=case.num_layers, bidirectional=case.bidirectional)
    if case.proj_size:
        kwargs["proj_size"] = case.proj_size
    torch.manual_seed(0)
    ref = ref_cls(I, H, **kwargs)
    ours = our_cls(I, H, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref.to(device=device, dtype=dtype), ours.to(device=device, dtype=dtype)


def make_input(case: Case, device: str, dtype: torch.dtype, requires_grad: bool):
    """(input to feed, the leaf tensor to differentiate with respect to)."""
    T, B, I, _ = case.size
    torch.manual_seed(1)
    x = torch.randn(T, B, I, device=device, dtype=dtype)
    if not case.packed:
        x.requires_grad_(requires_grad)
        return x, x
    packed = pack_padded_sequence(x, torch.tensor(packed_lengths(T, B)), enforce_sorted=False)
    # A leaf `data`, so each training step differentiates a fresh graph.
    data = packed.data.detach().requires_grad_(requires_grad)
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                          packed.unsorted_indices), data


def sequence_outputs(module: nn.Module, input) -> torch.Tensor:
    output, _ = module(input)
    return output.data if isinstance(output, PackedSequence) else output


def cell_loop_outputs(cell: nn.Module, input: torch.Tensor) -> torch.Tensor:
    """The hidden states of the cell stepped over input's time steps in a Python loop."""
    state = None
    hidden = []
    for x_t in input:
        state = cell(x_t, state)
        hidden.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(hidden)


def inference_runner(outputs_of, module, input) -> Callable[[], None]:
    def run():
        with torch.inference_mode():
            outputs_of(module, input)
    return run


def training_runner(outputs_of, module, input, leaf) -> Callable[[], None]:
    wrt = [leaf] + list(module.parameters())

    def run():
        torch.autograd.grad(outputs_of(module, input).sum(), wrt)
    return run


FlagsContext = Callable[[], contextlib.AbstractContextManager]


def baseline_flags(case: Case, device: str) -> Dict[str, FlagsContext]:
    """Baseline name -> the backend flags it runs under."""
    if device == "cuda":
        if case.is_cell:  # the cells never call cuDNN
            return {"torch.nn": contextlib.nullcontext}
        return {"torch.nn (cuDNN)": contextlib.nullcontext,
                "torch.nn (no cuDNN)": lambda: torch.backends.cudnn.flags(enabled=False)}
    flags = {"torch.nn": contextlib.nullcontext}
    if case.is_lstm:
        flags["torch.nn (no oneDNN)"] = lambda: torch.backends.mkldnn.flags(enabled=False)
    return flags


def under_flags(flags, run: Callable[[], None]) -> Callable[[], None]:
    if flags is contextlib.nullcontext:
        return run

    def run_under_flags():
        with flags():
            run()
    return run_under_flags


def phase_runner(phase: str, outputs_of, module, input, leaf) -> Callable[[], None]:
    if phase == "forward":
        return inference_runner(outputs_of, module, input)
    return training_runner(outputs_of, module, input, leaf)


def build_runners(case: Case, phases: List[str], device: str,
                  dtype: torch.dtype) -> Dict[str, Dict[str, Callable[[], None]]]:
    """phase -> {"rnnkern": run, baseline name: run, ...}."""
    ref, ours = make_modules(case, device, dtype)
    outputs_of = cell_loop_outputs if case.is_cell else sequence_outputs
    runners = {}
    for phase in phases:
        input, leaf = make_input(case, device, dtype, requires_grad=phase == "fwd+bwd")
        runners[phase] = {"rnnkern": phase_runner(phase, outputs_of, ours, input, leaf)}
        for name, flags in baseline_flags(case, device).items():
            baseline = phase_runner(phase, outputs_of, ref, input, leaf)
            runners[phase][name] = under_flags(flags, baseline)
    return runners
