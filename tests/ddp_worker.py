"""Run by test_integration.py: trains one step of a small rnnkern model under
DistributedDataParallel (gloo, 2 processes on 127.0.0.1) and writes the
gradients rank 0 sees to the file given on the command line."""
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rnnkern


def batch():
    torch.manual_seed(1)
    return torch.randn(5, 8, 4, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = rnnkern.GRU(4, 6, num_layers=2, bidirectional=True)
        self.lstm = rnnkern.LSTM(12, 5)
        self.head = torch.nn.Linear(5, 1)

    def forward(self, x):
        y, _ = self.rnn(x)
        y, _ = self.lstm(y)
        return self.head(y[-1])


def loss_of(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def rank_main(rank, world, port, out_path):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(Model().double())
    x, y = batch()
    share = x.shape[1] // world
    part = slice(rank * share, (rank + 1) * share)
    loss_of(model, x[:, part], y[part]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out_path)
    dist.barrier()
    dist.destroy_process_group()
    # Leave without interpreter teardown: on a loaded machine gloo's background
    # threads can still be winding down then, and the process aborts
    # ("terminate called without an active exception") after the work is done.
    os._exit(0)


def single_process_grads():
    model = Model().double()
    x, y = batch()
    loss_of(model, x, y).backward()
    return {n: p.grad for n, p in model.named_parameters()}


if __name__ == "__main__":
    port, out_path = int(sys.argv[1]), sys.argv[2]
    mp.spawn(rank_main, args=(2, port, out_path), nprocs=2, join=True)
