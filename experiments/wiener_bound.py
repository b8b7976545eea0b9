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
  args = p.parse_args(argv)
  print(f"synthetic_strong v{strong.STRONG_VERSION}: Wiener deconvolution with the true PSF")
  for kind in KINDS:
    pairs = list(pairs_with_psfs(kind))
    for nsr in args.nsr:
      gains = [psnr(deconvolve(b, k, nsr, kind == "tremor"), s) - psnr(b, s)
               for _, s, b, k in pairs]
      print(f"  {kind:13s} nsr {nsr:<6g} gain {np.mean(gains):+.2f} dB "
            f"(worst {min(gains):+.2f}, {len(gains)} pairs)")


if __name__ == "__main__":
  main()
