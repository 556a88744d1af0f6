"""Data-parallel training of a `fusedrnn.torch` model with torch.distributed.

Every process holds a replica of the model (DistributedDataParallel, gloo
backend: CPU tensors), works on its slice of each global batch, and DDP
averages the gradients across processes during the backward, so all replicas
take the same optimiser step as one process on the whole batch would.

One machine, 2 processes:

    torchrun --standalone --nproc_per_node=2 -m fusedrnn.ddp_demo --steps 50

Many machines (run on each of N machines, node_rank 0..N-1; MASTER is the
address of node 0, reachable from all):

    torchrun --nnodes=N --node_rank=K --nproc_per_node=P \\
             --master_addr=MASTER --master_port=29500 -m fusedrnn.ddp_demo

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; this
script reads them (init_method "env://"), so it also runs under any launcher
that sets them (Slurm wrappers, mpirun with those variables, a test harness).
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import fusedrnn as fr

from .torch import LSTM

__all__ = ["build_model", "global_batch", "train", "main"]


def build_model(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """A 2-layer bidirectional augmented LSTM (peepholes, projection, a look-ahead
    context window) and a linear read-out, identical on every process."""
    torch.manual_seed(seed)
    rnn = LSTM(3, 8, peepholes="diagonal", proj_size=4, context=(0, 1), num_layers=2,
               bidirectional=True, dtype=dtype, seed=seed)
    head = nn.Linear(8, 1, dtype=dtype)
    return nn.ModuleDict({"rnn": rnn, "head": head})


class _Net(nn.Module):
    """The model as one module with a forward (what DDP wraps)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.inner.get_submodule("rnn")(x)
        out: torch.Tensor = self.inner.get_submodule("head")(y)
        return out


def global_batch(step: int, batch: int, T: int = 10,
                 dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, torch.Tensor]:
    """The step's global batch (the same on every process): x (T, batch, 3) and a
    target that needs memory and one frame of look-ahead."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(T, batch, 3, generator=g, dtype=dtype)
    target = torch.cumsum(x[..., :1], 0) / 4 + torch.roll(x[..., 1:2], -1, 0)
    return x, target


def train(steps: int, batch: int, rank: int = 0, world: int = 1, lr: float = 0.05,
          dtype: torch.dtype = torch.float64) -> Dict[str, np.ndarray]:
    """Train for `steps` SGD steps. With world > 1 (torch.distributed initialised)
    the model is wrapped in DDP and this process takes rows
    [rank * batch / world, (rank + 1) * batch / world) of each global batch.
    Returns the gradients of the first step ("grad/<name>"), the final
    parameters ("param/<name>") and the losses."""
    if batch % world:
        raise ValueError(f"the global batch ({batch}) must divide evenly over {world} processes")
    net: nn.Module = _Net(build_model(dtype))
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net)
    params = dict(net.named_parameters())
    opt = torch.optim.SGD(params.values(), lr=lr)
    b = batch // world
    out: Dict[str, np.ndarray] = {}
    losses = []
    for step in range(steps):
        x, target = global_batch(step, batch, dtype=dtype)
        x, target = x[:, rank * b:(rank + 1) * b], target[:, rank * b:(rank + 1) * b]
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), target)  # mean over this process's rows
        loss.backward()  # type: ignore[no-untyped-call]  # DDP: all-reduce-mean of the grads
        if step == 0:
            out.update({f"grad/{_name(n)}": _grad(p) for n, p in params.items()})
        opt.step()
        losses.append(loss.item())
    out.update({f"param/{_name(n)}": p.detach().numpy().copy() for n, p in params.items()})
    out["losses"] = np.array(losses)
    return out


def _grad(p: torch.Tensor) -> np.ndarray:
    if p.grad is None:
        raise RuntimeError("a parameter got no gradient")
    return p.grad.detach().numpy().copy()


def _name(n: str) -> str:
    return n[len("module."):] if n.startswith("module.") else n


def main(argv: Optional[Any] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16, help="global batch size")
    ap.add_argument("--out", default=None, help="rank 0 saves gradients and parameters here (.npz)")
    ap.add_argument("--float32", action="store_true", help="train in float32 (default float64)")
    ap.add_argument("--threads", type=int, default=0,
                    help="cores per process (default: this machine's cores / LOCAL_WORLD_SIZE)")
    args = ap.parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    # processes on one machine share its cores: give each its share, for torch's
    # pool and for fusedrnn's (the BLAS and the direction threads)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    threads = args.threads or max(1, (os.cpu_count() or 1) // local)
    torch.set_num_threads(threads)
    fr.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)
    try:
        res = train(args.steps, args.batch, rank, world,
                    dtype=torch.float32 if args.float32 else torch.float64)
        if rank == 0:
            print(f"world {world}: loss {res['losses'][0]:.4f} -> {res['losses'][-1]:.4f} "
                  f"after {args.steps} steps", flush=True)
            if args.out:
                np.savez(args.out, **res)  # type: ignore[arg-type]
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
