"""Bilinear pooling (B-CNN) and its compact approximation by Tensor Sketch (CBP).

- `bilinear`: (1/M) X X^T of a B x C x M map, uncentred (Lin et al., B-CNN), flattened to C^2.
- `signed_sqrt_l2`: y -> sign(y) sqrt(|y| + eps), then divided by its L2 norm (B-CNN's normalisation).
- `count_sketch` / `tensor_sketch`: Pham & Pagh's Tensor Sketch of x (x) x, used by compact
  bilinear pooling (Gao et al., CBP): psi(x) = IFFT(FFT(C1 x) * FFT(C2 x)), where C1, C2 are
  count sketches (hash h: [C] -> [d], sign s: [C] -> +-1). It equals the count sketch of the
  outer product with hash (h1(i) + h2(j)) mod d and sign s1(i) s2(j), so
  E <psi(x), psi(y)> = <x, y>^2, the bilinear kernel. Summed over positions it sketches the
  (unnormalised) bilinear matrix, since the sketch is linear in x (x) x.
"""

from __future__ import annotations

import torch


def bilinear(x: torch.Tensor) -> torch.Tensor:
    """B x C x M (or B x C x H x W) -> B x C^2: the flattened (1/M) X X^T (not centred)."""
    if x.dim() == 4:
        x = x.flatten(2)
    if x.dim() != 3:
        raise ValueError(f"bilinear expects B x C x M or B x C x H x W, got shape {tuple(x.shape)}")
    return (torch.bmm(x, x.transpose(1, 2)) / x.shape[-1]).flatten(1)


def signed_sqrt_l2(y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """sign(y) sqrt(|y| + eps), then L2-normalised per row (eps keeps the gradient at 0 finite)."""
    y = torch.sign(y) * torch.sqrt(y.abs() + eps)
    return torch.nn.functional.normalize(y, dim=-1)


def count_sketch(x: torch.Tensor, index: torch.Tensor, sign: torch.Tensor, d: int) -> torch.Tensor:
    """... x C -> ... x d: out[..., index[c]] += sign[c] x[..., c]."""
    out = x.new_zeros(*x.shape[:-1], d)
    return out.index_add_(-1, index, x * sign)


def tensor_sketch(x: torch.Tensor, index: torch.Tensor, sign: torch.Tensor, d: int) -> torch.Tensor:
    """B x C x M map -> B x d: the sum over positions of the Tensor Sketch of x_p (x) x_p, divided by M.

    index, sign: 2 x C (two independent count sketches). Summing the products in the Fourier
    domain before one inverse FFT per image is the same sum (the transforms are linear).
    """
    if x.dim() == 4:
        x = x.flatten(2)
    if x.dim() != 3:
        raise ValueError(f"tensor_sketch expects B x C x M or B x C x H x W, got shape {tuple(x.shape)}")
    positions = x.transpose(1, 2)  # B x M x C
    f1 = torch.fft.rfft(count_sketch(positions, index[0], sign[0], d), dim=-1)
    f2 = torch.fft.rfft(count_sketch(positions, index[1], sign[1], d), dim=-1)
    return torch.fft.irfft((f1 * f2).sum(dim=1), n=d, dim=-1) / x.shape[-1]


def random_sketch(channels: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two fixed count sketches of C channels into d bins: (2 x C hashes, 2 x C signs), seeded."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, d, (2, channels), generator=g)
    sign = torch.randint(0, 2, (2, channels), generator=g).float() * 2 - 1
    return index, sign
