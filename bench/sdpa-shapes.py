"""Why finerank keeps attention off cuDNN's kernel on a GPU: the cost of a new shape.

Times PyTorch's `scaled_dot_product_attention`, forward and backward, at MiniLM's shape (12 heads
of 32), in bf16, with a boolean padding mask and a batch of 16, as finerank's encoder calls it.
Each backend sees 20 lengths it has not seen before, twice each: the first call at a length pays
for whatever the backend builds per shape, the second does not. finerank's batches are padded to
their own longest input, so in fine-tuning and reranking nearly every batch is a new shape.

Usage (CUDA only; bench/gpu.sh runs it): python3 bench/sdpa-shapes.py
"""
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def sweep(lengths):
    """Mean milliseconds per call: at a new length, and repeated at the same length."""
    first, again = [], []
    for n in lengths:
        q = torch.randn(16, 12, n, 32, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        mask = torch.ones(16, 1, 1, n, dtype=torch.bool, device="cuda")
        mask[..., n - 7:] = False
        for times in (first, again):
            torch.cuda.synchronize()
            t = time.perf_counter()
            F.scaled_dot_product_attention(q, q, q, attn_mask=mask).sum().backward()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return 1e3 * sum(first) / len(first), 1e3 * sum(again) / len(again)


def main():
    sweep(range(100, 104))  # the CUDA context and library handles, outside the timings
    print(f"{torch.cuda.get_device_name(0)}; cuDNN attention enabled by default: "
          f"{torch.backends.cuda.cudnn_sdp_enabled()}")
    # Each backend gets its own lengths, so that none finds another's plans cached.
    runs = [("default", None, 200), ("cudnn", SDPBackend.CUDNN_ATTENTION, 300),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION, 400), ("math", SDPBackend.MATH, 500)]
    for name, backend, base in runs:
        lengths = range(base, base + 20)
        try:
            if backend is None:
                new, repeated = sweep(lengths)
            else:
                with sdpa_kernel([backend]):
                    new, repeated = sweep(lengths)
        except RuntimeError as e:  # a backend that cannot serve this shape says so
            print(f"{name:9s}: {str(e).splitlines()[0]}")
            continue
        print(f"{name:9s}: {new:8.2f} ms at a new length, {repeated:6.2f} ms repeated")


if __name__ == "__main__":
    main()
