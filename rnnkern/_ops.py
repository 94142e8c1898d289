"""The ``torch.ops.rnnkern`` operators: loading, fake (meta) kernels, autograd.

The C++ extension registers the schemas and the device kernels. Here each op
gets a fake implementation (shapes only, for torch.compile / torch.export /
FakeTensor); ``_autograd`` gives ``layer_forward`` its derivatives and
``_vmap`` the ops their batching rules.
"""
import torch

try:
    from . import _C  # noqa: F401  (importing runs the operator registrations)
except ImportError as error:  # most often: the source tree shadows the installed package
    raise ImportError(
        "rnnkern's C++ extension (rnnkern._C) could not be imported. Build and install it with "
        "`pip install --no-build-isolation .`, and do not run from the source tree's root, "
        f"whose rnnkern/ folder has no built extension. ({error})"
    ) from error

MODE_IDS = {"RNN_TANH": 0, "RNN_RELU": 1, "LSTM": 2, "GRU": 3}
LSTM = MODE_IDS["LSTM"]
GRU = MODE_IDS["GRU"]
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

# The overloads themselves: calling an OpOverloadPacket resolves the overload on
# every call, which a cell stepped from Python pays each step.
layer_forward = torch.ops.rnnkern.layer_forward.default
layer_backward = torch.ops.rnnkern.layer_backward.default
layer_backward_data = torch.ops.rnnkern.layer_backward_data.default
layer_forward_bidirectional = torch.ops.rnnkern.layer_forward_bidirectional.default
layer_backward_bidirectional = torch.ops.rnnkern.layer_backward_bidirectional.default
cell_forward = torch.ops.rnnkern.cell_forward.default
cell_forward_train = torch.ops.rnnkern.cell_forward_train.default
cell_backward = torch.ops.rnnkern.cell_backward.default
cell_train_step = torch.ops.rnnkern.cell_train_step.default
stack_forward = torch.ops.rnnkern.stack_forward.default
stack_backward = torch.ops.rnnkern.stack_backward.default
cpu_capability = torch.ops.rnnkern.cpu_capability
# Switches the CPU kernels to another instruction set the CPU has, returning the
# previous one's name: for tests and benchmarks (see rnnkern.cpu_capability).
set_cpu_capability = torch.ops.rnnkern._set_cpu_capability


@torch.library.register_fake("rnnkern::layer_forward")
def _layer_forward_fake(mode, input, batch_sizes, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                        train):
    R = w_hh.shape[1]
    H = w_hr.shape[1] if w_hr is not None else R
    N = input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]
    def none():
        return input.new_empty(0)

    output = input.new_empty((*input.shape[:-1], R))
    hy = input.new_empty(hx.shape)
    cy = input.new_empty(cx.shape) if mode == LSTM else none()
    if not train:
        return output, hy, cy, none(), none(), none()
    extra = none()
    if mode in (LSTM, GRU):
        extra = input.new_empty((2, N, H) if w_hr is not None else (N, H))
    return output, hy, cy, input.new_empty((N, R)), input.new_empty((N, w_hh.shape[0])), extra


@torch.library.register_fake("rnnkern::cell_forward")
def _cell_forward_fake(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    return input.new_empty(hx.shape), input.new_empty(cx.shape if mode == LSTM else (0,))


@torch.library.register_fake("rnnkern::cell_forward_train")
def _cell_forward_train_fake(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    hy, cy = _cell_forward_fake(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh)
    extra = hx.shape if mode in (LSTM, GRU) else (0,)
    return hy, cy, input.new_empty((input.shape[0], w_hh.shape[0])), input.new_empty(extra)


@torch.library.register_fake("rnnkern::cell_train_step")
def _cell_train_step_fake(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    return _cell_forward_fake(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh)


@torch.library.register_fake("rnnkern::cell_backward")
def _cell_backward_fake(mode, input, hx, w_ih, w_hh, saved_gates, saved_extra, hy, grad_hy,
                        grad_cy, output_mask):
    want_input, want_state, want_weights, want_bias = output_mask

    def like(wanted, shape):
        return input.new_empty(shape if wanted else (0,))

    return (like(want_input, input.shape), like(want_state, hx.shape),
            like(want_state and mode == LSTM, hx.shape), like(want_weights, w_ih.shape),
            like(want_weights, w_hh.shape), like(want_bias, (w_hh.shape[0],)),
            like(want_bias, (w_hh.shape[0],)))


@torch.library.register_fake("rnnkern::layer_backward")
def _layer_backward_fake(mode, input, batch_sizes, w_ih, w_hh, w_hr, output, saved_h_prev,
                         saved_gates, saved_extra, grad_output, grad_hy, grad_cy, reverse, batch,
                         output_mask):
    R = w_hh.shape[1]
    H = w_hr.shape[1] if w_hr is not None else R
    def like(wanted, *shape):
        return input.new_empty(shape if wanted else (0,))

    want_input, want_state, want_weights, want_bias = output_mask
    return (
        like(want_input, *input.shape),
        like(want_state, batch, R),
        like(want_state and mode == LSTM, batch, H),
        like(want_weights, *w_ih.shape),
        like(want_weights, *w_hh.shape),
        like(want_bias, w_hh.shape[0]),
        like(want_bias, w_hh.shape[0]),
        like(want_weights and w_hr is not None, *(w_hr.shape if w_hr is not None else ())),
    )


@torch.library.register_fake("rnnkern::layer_backward_data")
def _layer_backward_data_fake(mode, input, batch_sizes, w_ih, w_hh, w_hr, output, saved_h_prev,
                              saved_gates, saved_extra, grad_output, grad_hy, grad_cy, reverse,
                              batch, want_input):
    R = w_hh.shape[1]
    H = w_hr.shape[1] if w_hr is not None else R
    N = input.shape[0] if batch_sizes is not None else input.shape[0] * input.shape[1]

    def like(wanted, *shape):
        return input.new_empty(shape if wanted else (0,))

    return (
        like(want_input, *input.shape),
        like(True, batch, R),
        like(mode == LSTM, batch, H),
        like(True, N, w_hh.shape[0]),
        like(mode == GRU, N, w_hh.shape[0]),
        like(w_hr is not None, N, R),
    )


@torch.library.register_fake("rnnkern::layer_forward_bidirectional")
def _layer_forward_bidirectional_fake(mode, input, batch_sizes, forward, reverse, train):
    return tuple(list(_layer_forward_fake(mode, input, batch_sizes, *d, reverse=k == 1,
                                          train=train))
                 for k, d in enumerate((forward, reverse)))


@torch.library.register_fake("rnnkern::layer_backward_bidirectional")
def _layer_backward_bidirectional_fake(mode, input, batch_sizes, forward, reverse, batch,
                                       output_mask):
    return tuple(list(_layer_backward_fake(mode, input, batch_sizes, *d[:3], *d[3:7], *d[7:10],
                                           k == 1, batch, output_mask))
                 for k, d in enumerate((forward, reverse)))



@torch.library.register_fake("rnnkern::stack_forward")
def _stack_forward_fake(mode, input, batch_sizes, hx, cx, weights, num_layers, bidirectional,
                        dropout, train):
    directions = 2 if bidirectional else 1
    saved, inputs, h_n, c_n = [], [], [], []
    layer_input = input
    for layer in range(num_layers):
        outputs = []
        for d in range(directions):
            i = layer * directions + d
            w = weights[5 * i:5 * i + 5]
            result = _layer_forward_fake(mode, layer_input, batch_sizes, hx[i],
                                         cx[i] if mode == LSTM else None, *w, d == 1, train)
            outputs.append(result[0])
            h_n.append(result[1])
            c_n.append(result[2])
            top_output = layer == num_layers - 1 and directions == 1
            saved += [input.new_empty(0) if top_output else result[0], *result[3:]]
        width = sum(o.shape[-1] for o in outputs)
        layer_input = input.new_empty((*outputs[0].shape[:-1], width))
        if layer < num_layers - 1:
            if dropout == 0:
                noise = input.new_empty(0)
            elif dropout == 1 or layer_input.numel() == 0:
                noise = input.new_empty(())
            else:  # CUDA's native_dropout keeps a boolean mask
                cuda = input.device.type == "cuda"
                noise = layer_input.new_empty(layer_input.shape,
                                              dtype=torch.bool if cuda else input.dtype)
            kept = directions == 2 or dropout > 0
            inputs += [input.new_empty(layer_input.shape if kept else 0), noise]
    none = input.new_empty(0)
    return (layer_input, torch.stack(h_n), torch.stack(c_n) if mode == LSTM else none,
            saved + inputs if train else [])


@torch.library.register_fake("rnnkern::stack_backward")
def _stack_backward_fake(mode, input, batch_sizes, weights, output, saved, grad_output, grad_hy,
                         grad_cy, num_layers, bidirectional, dropout, batch, output_mask):
    directions = 2 if bidirectional else 1
    want_input, want_state, want_weights, want_bias = output_mask
    count = num_layers * directions
    grads = []
    for i in range(count):
        w_ih, w_hh, b_ih, _, w_hr = weights[5 * i:5 * i + 5]
        bias = want_bias and b_ih is not None
        grads += [input.new_empty(w_ih.shape if want_weights else 0),
                  input.new_empty(w_hh.shape if want_weights else 0),
                  input.new_empty(b_ih.shape if bias else 0),
                  input.new_empty(b_ih.shape if bias else 0),
                  input.new_empty(w_hr.shape if want_weights and w_hr is not None else 0)]
    R = weights[1].shape[1]
    H = weights[4].shape[1] if weights[4] is not None else R
    return (input.new_empty(input.shape if want_input else 0),
            input.new_empty((count, batch, R) if want_state else 0),
            input.new_empty((count, batch, H) if want_state and mode == LSTM else 0),
            grads)
