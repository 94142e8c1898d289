"""Cost of the derivatives beyond first-order backward, relative to it.

For an LSTM (and a GRU) layer, fp32, medians of interleaved runs:
forward + backward (the reference), forward-mode AD (jvp of the input),
double backward (a gradient penalty), per-sample gradients with
vmap(grad) against a Python loop over the samples, and jacrev.

    python benchmarks/bench_transforms.py [--batch 32] [--steps 50] [--hidden 128]
"""
import argparse
import statistics
import time

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, vmap

import rnnkern


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def cases(module, x):
    params = {k: p.detach() for k, p in module.named_parameters()}
    target = torch.randn_like(module(x[:1])[0])

    def loss(p, xs, y):
        return (functional_call(module, p, (xs,))[0] - y).pow(2).sum()

    def first_order():
        xs = x.clone().requires_grad_()
        torch.autograd.grad(module(xs)[0].sum(), [xs, *module.parameters()])

    def forward_ad():
        with fwAD.dual_level():
            module(fwAD.make_dual(x, torch.ones_like(x)))

    def double_backward():
        xs = x.clone().requires_grad_()
        g, = torch.autograd.grad(module(xs)[0].pow(2).sum(), xs, create_graph=True)
        torch.autograd.grad(g.pow(2).sum(), list(module.parameters()))

    def per_sample_vmap():
        vmap(grad(loss), in_dims=(None, 0, None))(params, x.unsqueeze(1), target)

    def per_sample_loop():
        for b in range(x.shape[0]):
            grad(loss)(params, x[b:b + 1], target)

    return {"forward + backward (batch)": first_order,
            "forward-mode AD (jvp of x)": forward_ad,
            "double backward (penalty)": double_backward,
            "per-sample grads, vmap(grad)": per_sample_vmap,
            "per-sample grads, loop": per_sample_loop}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU kernels: {rnnkern.cpu_capability()}, threads: {torch.get_num_threads()}, "
          f"B={args.batch} T={args.steps} H={args.hidden} fp32")
    for name in ("LSTM", "GRU"):
        torch.manual_seed(0)
        module = getattr(rnnkern, name)(args.hidden, args.hidden, batch_first=True)
        x = torch.randn(args.batch, args.steps, args.hidden)
        runs = {k: [] for k in cases(module, x)}
        for _ in range(args.repeats):  # interleaved
            for k, fn in cases(module, x).items():
                runs[k].append(median_ms(fn, 1))
        base = statistics.median(runs["forward + backward (batch)"])
        print(f"\n{name}\n{'case':32s} {'ms':>9s} {'x fwd+bwd':>10s}")
        for k, v in runs.items():
            ms = statistics.median(v)
            print(f"{k:32s} {ms:9.2f} {ms / base:10.2f}")


if __name__ == "__main__":
    main()
