"""What a *non-blind* deconvolution gains on `synthetic_strong`: a reference point.

    python experiments/wiener_bound.py

The strong held-out set's `strong_shake` and `tremor` pairs each come from one
PSF (`flax_gradnet.data.strong`); this script draws the very PSFs and noise of
those pairs again (same seeds) and deconvolves every blurry image with a Wiener
filter that *knows* its PSF (`tremor` in linear light, as it was blurred), for
a few noise-to-signal ratios, and prints the mean PSNR gain per ratio and kind.
A blind deblurring network has to estimate the PSF as well; the best ratio here
is chosen with the sharp images (an oracle). `dynamic` has no single PSF and is
left out. Numpy only; about a minute on a 2-core CPU.

    python experiments/wiener_bound.py --nsr 0.01 --band 1 2 4 8

`--band F ...` also keeps only the low frequencies of the Wiener correction
(deconvolved - blurry): area-averaged over F x F blocks and bilinearly
upsampled back, i.e. a correction computed at 1/F of the resolution. How much
of the gain survives says at which scale strong blur is recoverable at all
(what `model.scales`, coarse-to-fine passes, relies on).
"""

import argparse

import numpy as np

from flax_gradnet.data import online, strong, synthetic

KINDS = ("strong_shake", "tremor")


def wiener(image: np.ndarray, psf: np.ndarray, nsr: float) -> np.ndarray:
  """Per-channel Wiener deconvolution of float [H, W, C] with reflect padding."""
  h, w = image.shape[:2]
  pad = max(psf.shape)
  x = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
  kernel = np.zeros(x.shape[:2])
  kernel[:psf.shape[0], :psf.shape[1]] = psf
  kernel = np.roll(kernel, (-(psf.shape[0] // 2), -(psf.shape[1] // 2)), axis=(0, 1))
  f = np.fft.fft2(kernel)
  gain = np.conj(f) / (np.abs(f) ** 2 + nsr)
  out = np.stack([np.real(np.fft.ifft2(np.fft.fft2(x[..., c]) * gain))
                  for c in range(x.shape[-1])], axis=-1)
  return out[pad:pad + h, pad:pad + w]


def deconvolve(blurry: np.ndarray, psf: np.ndarray, nsr: float, linear_light: bool) -> np.ndarray:
  if linear_light:
    out = wiener(synthetic.srgb_to_linear(blurry), psf, nsr)
    return synthetic.linear_to_srgb(np.clip(out, 0.0, 1.0))
  return np.clip(np.round(wiener(blurry.astype(np.float64), psf, nsr)), 0, 255).astype(np.uint8)


def low_pass(correction: np.ndarray, factor: int) -> np.ndarray:
  """`correction` [H, W, C] as seen at 1/factor of the resolution: F x F block
  means (edge-padded to a multiple of F), bilinearly upsampled with half-pixel
  centres (edges clamped), cropped back."""
  if factor == 1:
    return correction
  h, w, c = correction.shape
  x = np.pad(correction, ((0, (-h) % factor), (0, (-w) % factor), (0, 0)), mode="edge")
  hs, ws = x.shape[0] // factor, x.shape[1] // factor
  small = x.reshape(hs, factor, ws, factor, c).mean(axis=(1, 3))

  def weights(n_in, n_out):
    pos = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - (pos - lo)
    m[np.arange(n_out), hi] += pos - lo
    return m

  up = np.einsum("ih,hwc->iwc", weights(hs, x.shape[0]), small)
  up = np.einsum("jw,iwc->ijc", weights(ws, x.shape[1]), up)
  return up[:h, :w]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def pairs_with_psfs(kind: str):
  """(name, sharp, blurry, psf) of `strong.strong_pairs()`'s pairs of `kind`,
  redrawn with the set's own seeds and asserted equal to them."""
  held = {ex["name"]: ex for ex in strong.strong_pairs(kinds=(kind,))}
  for name, photo in online.heldout_photographs().items():
    for draw in range(strong.DRAWS):
      rng = strong.pair_rng(name, kind, draw)
      psf, linear_light = strong.kind_psf(kind, rng)
      blurry = synthetic.apply_psf(photo, psf, linear_light=linear_light)
      blurry, _ = synthetic.random_sensor_noise(blurry, rng)
      key = f"{name}/{kind}_{draw}.png"
      assert np.array_equal(blurry, held[key]["blur"]), f"{key}: not the held-out pair"
      yield key, photo, blurry, psf


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--nsr", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1])
  p.add_argument("--band", type=int, nargs="+", default=[1],
                 help="keep the correction at 1/F of the resolution, for each F (1 = all of it)")
  args = p.parse_args(argv)
  if any(f < 1 for f in args.band):
    p.error(f"--band factors must be >= 1, got {args.band}")
  print(f"synthetic_strong v{strong.STRONG_VERSION}: Wiener deconvolution with the true PSF")
  for kind in KINDS:
    pairs = list(pairs_with_psfs(kind))
    for nsr in args.nsr:
      restored = [(deconvolve(b, k, nsr, kind == "tremor").astype(np.float64), s, b)
                  for _, s, b, k in pairs]
      for factor in args.band:
        gains = [psnr(np.clip(np.round(b + low_pass(r - b, factor)), 0, 255), s) - psnr(b, s)
                 for r, s, b in restored]
        band = "" if factor == 1 else f" band 1/{factor}"
        print(f"  {kind:13s} nsr {nsr:<6g}{band} gain {np.mean(gains):+.2f} dB "
              f"(worst {min(gains):+.2f}, {len(gains)} pairs)")


if __name__ == "__main__":
  main()
