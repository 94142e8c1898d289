"""A character-level LSTM language model trained on a short text.

    python examples/char_lm.py                 # rnnkern and torch.nn, timed side by side
    python examples/char_lm.py --impl rnnkern  # just one of them
    python examples/char_lm.py --steps 300 --sample 200

Both implementations train the same model from the same initial weights on
the same batches, so their losses agree and only the speed differs.
"""
import argparse
import os
import time

import torch
from torch import nn

import rnnkern

TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "lighthouse.txt")


class CharLM(nn.Module):
    def __init__(self, vocab, lstm_cls, hidden=256, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, 64)
        self.lstm = lstm_cls(64, hidden, num_layers=layers, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        out, state = self.lstm(self.embed(tokens), state)
        return self.head(out), state


def batches(data, steps, batch, seq_len, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=gen)
        chunk = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])
        yield chunk[:, :-1], chunk[:, 1:]


def train(impl, data, vocab, args):
    torch.manual_seed(0)
    lstm_cls = rnnkern.LSTM if impl == "rnnkern" else nn.LSTM
    model = CharLM(vocab, lstm_cls, args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches(data, args.steps, args.batch, args.seq_len)):
        logits, _ = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"  [{impl}] step {step:4d}  loss {loss.item():.3f}")
    return model, time.perf_counter() - start


@torch.no_grad()
def sample(model, chars, length, prompt="The "):
    model.eval()
    index = {c: i for i, c in enumerate(chars)}
    tokens = torch.tensor([[index[c] for c in prompt]])
    logits, state = model(tokens)
    out = list(prompt)
    gen = torch.Generator().manual_seed(1)
    for _ in range(length):
        probs = torch.softmax(logits[0, -1] / 0.8, -1)
        nxt = torch.multinomial(probs, 1, generator=gen)
        out.append(chars[nxt.item()])
        logits, state = model(nxt.view(1, 1), state)
    return "".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=["rnnkern", "torch", "both"], default="both")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--sample", type=int, default=120, help="characters to generate")
    args = parser.parse_args()

    text = open(TEXT, encoding="utf-8").read()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    impls = ["rnnkern", "torch"] if args.impl == "both" else [args.impl]
    times = {}
    for impl in impls:
        print(f"training with {impl} ({args.steps} steps, batch {args.batch}, "
              f"length {args.seq_len})")
        model, times[impl] = train(impl, data, len(chars), args)
        print(f"  [{impl}] {times[impl]:.2f} s, {1e3 * times[impl] / args.steps:.1f} ms/step")
        if args.sample:
            print("  sample:", repr(sample(model, chars, args.sample)))
    if len(times) == 2:
        print(f"rnnkern is {times['torch'] / times['rnnkern']:.2f}x the speed of torch.nn here")


if __name__ == "__main__":
    main()
