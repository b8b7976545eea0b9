"""Why the paper's Table 3 "FLOPs" read as multiply-adds.

Counts, with the same XLA cost analysis as `flax_gradnet.cost`, the
DeblurGAN generator (Kupyn et al. [37]: ResnetGenerator, ngf=64, 9 residual
blocks) at 1280x720, whose Table 3 entry is 678.29 G. If XLA's FLOPs / 2
(multiply-adds) lands near 678 G and XLA's FLOPs near twice that, Table 3
counts multiply-adds.

    python experiments/deblurgan_cost.py
"""

import flax.linen as nn
import jax.numpy as jnp

from flax_gradnet.cost import forward_cost


class DeblurGANGenerator(nn.Module):
  """pix2pix/DeblurGAN ResnetGenerator layout (no weights needed for counting)."""

  ngf: int = 64
  n_blocks: int = 9

  @nn.compact
  def __call__(self, x):
    pad = lambda y, p: jnp.pad(y, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    norm = lambda y: nn.relu(nn.InstanceNorm()(y))
    y = norm(nn.Conv(self.ngf, (7, 7), padding="VALID")(pad(x, 3)))
    y = norm(nn.Conv(2 * self.ngf, (3, 3), strides=2, padding=1)(y))
    y = norm(nn.Conv(4 * self.ngf, (3, 3), strides=2, padding=1)(y))
    for _ in range(self.n_blocks):
      r = norm(nn.Conv(4 * self.ngf, (3, 3), padding="VALID")(pad(y, 1)))
      r = nn.InstanceNorm()(nn.Conv(4 * self.ngf, (3, 3), padding="VALID")(pad(r, 1)))
      y = y + r
    y = norm(nn.ConvTranspose(2 * self.ngf, (3, 3), strides=(2, 2), padding="SAME")(y))
    y = norm(nn.ConvTranspose(self.ngf, (3, 3), strides=(2, 2), padding="SAME")(y))
    return jnp.tanh(nn.Conv(3, (7, 7), padding="VALID")(pad(y, 3)))


if __name__ == "__main__":
  n, flops = forward_cost(DeblurGANGenerator(), 720, 1280)
  print(f"DeblurGAN generator at 1280x720: {n:,} parameters, {flops / 1e9:,.1f} XLA GFLOPs, "
        f"{flops / 2e9:,.1f} G multiply-adds; paper's Table 3 entry: 678.29 G")
