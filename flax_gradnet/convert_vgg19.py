"""Converts ImageNet VGG19 weights to the `.npz` that `flax_gradnet.vgg` reads.

    python -m flax_gradnet.convert_vgg19 --input vgg19-dcbb9e9d.pth \\
        --output vgg19_relu4_3.npz [--layer relu4_3]

Inputs (nothing is downloaded; fetch the file yourself):
  * `.pth`/`.pt`: torchvision's state dict (`vgg19-dcbb9e9d.pth`, keys
    `features.0.weight` ...; a bare `vgg19().features` state dict `0.weight` ...
    also works). Read with `torch.load(weights_only=True)`, which refuses
    arbitrary pickled objects; torch is needed only for this format.
  * `.safetensors`: the same torchvision key names, read without torch.
  * `.h5`: Keras' `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` (layers
    `block1_conv1` ...). Those weights come from the original Caffe model and
    expect BGR inputs in [0, 255] minus the Caffe mean; the conversion folds
    that convention into conv1_1 (channel flip, scale) so the output, like the
    torchvision one, takes torchvision-normalised RGB (`vgg.imagenet_normalize`).
    The folding is exact except in the one-pixel border of conv1_1, where the
    two conventions' means differ by at most 0.5/255 of a pixel value
    (torchvision's mean*255 vs Caffe's mean) and the zero padding sees it.

Only the convolutions up to `--layer` are kept (default relu4_3, the paper's
layer: 11 of the 16 convolutions, 33 MB instead of 80 MB); use `--layer relu5_4`
or `pool5` to keep all. The output is an uncompressed `.npz` of float32 arrays
`conv1_1.kernel` (HWIO), `conv1_1.bias`, ..., plus `meta.format`, written
atomically (temporary file + rename); an existing output is replaced only with
`--overwrite`, the input never.

Flags and exit statuses follow `flax_gradnet.cli`: 0 written; 2 nothing written
(a missing or unreadable input, an existing output without --overwrite, a bad
--layer).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping, Sequence

import numpy as np

from flax_gradnet import cli, vgg
from flax_gradnet.atomic import atomic_write

_TORCH_SUFFIXES = (".pth", ".pt")
_SAFETENSORS_SUFFIXES = (".safetensors",)
_H5_SUFFIXES = (".h5", ".hdf5")
# Caffe's BGR ImageNet mean in [0, 255], in RGB order (keras' preprocess_input, mode "caffe").
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)

Weights = dict[str, tuple[np.ndarray, np.ndarray]]  # conv name -> (HWIO kernel, bias)


class ConversionError(ValueError):
  """The input file cannot be converted; the message names the file and key."""


def keras_layer_name(conv: str) -> str:
  """"conv3_2" -> Keras' "block3_conv2"."""
  block, index = conv[len("conv"):].split("_")
  return f"block{block}_conv{index}"


def _check_shapes(path: str, key: str, kernel: np.ndarray, bias: np.ndarray, conv: str,
                  layout: str) -> None:
  expected = (3, 3, vgg.CONV_IN_CHANNELS[conv], vgg.CONV_WIDTH[conv])
  if layout == "OIHW":
    expected = (expected[3], expected[2], 3, 3)
  if kernel.shape != expected:
    raise ConversionError(f"{path}: {key} ({conv}) has shape {kernel.shape}, expected {expected} "
                          f"({layout}); is this VGG19?")
  if bias.shape != (vgg.CONV_WIDTH[conv],):
    raise ConversionError(f"{path}: bias of {key} ({conv}) has shape {bias.shape}, expected "
                          f"({vgg.CONV_WIDTH[conv]},)")


def _from_torch_names(path: str, tensors: Mapping[str, np.ndarray],
                      convs: Sequence[str]) -> Weights:
  """Picks torchvision-named OIHW tensors and transposes them to HWIO."""
  prefix = "features." if any(k.startswith("features.") for k in tensors) else ""
  weights = {}
  for conv in convs:
    key = f"{prefix}{vgg.TORCHVISION_INDEX[conv]}"
    if f"{key}.weight" not in tensors or f"{key}.bias" not in tensors:
      raise ConversionError(
          f"{path}: missing {key}.weight/{key}.bias ({conv}); expected torchvision's "
          f"vgg19 key names, found e.g. {sorted(tensors)[:6]}")
    kernel, bias = np.asarray(tensors[f"{key}.weight"]), np.asarray(tensors[f"{key}.bias"])
    _check_shapes(path, f"{key}.weight", kernel, bias, conv, "OIHW")
    weights[conv] = (kernel.transpose(2, 3, 1, 0).astype(np.float32), bias.astype(np.float32))
  return weights


def read_torch(path: str, convs: Sequence[str]) -> Weights:
  """Reads a torchvision state dict (`.pth`) without unpickling arbitrary objects."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConversionError(f"reading {path} needs PyTorch (pip install torch), or convert the "
                          "state dict to .safetensors elsewhere and pass that") from e
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
    raise ConversionError(f"{path}: not a weights-only PyTorch state dict ({e})") from e
  if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
    state = state["state_dict"]
  if not isinstance(state, Mapping):
    raise ConversionError(f"{path}: expected a state dict, found {type(state).__name__}")
  tensors = {k: v.detach().to(torch.float32).numpy() for k, v in state.items()
             if isinstance(k, str) and isinstance(v, torch.Tensor)}
  return _from_torch_names(path, tensors, convs)


def read_safetensors(path: str, convs: Sequence[str]) -> Weights:
  """Reads torchvision-named tensors from a `.safetensors` file (no torch needed)."""
  try:
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConversionError(f"reading {path} needs safetensors (pip install safetensors)") from e
  try:
    tensors = load_file(path)
  except Exception as e:  # safetensors raises its own SafetensorError.
    raise ConversionError(f"{path}: not a readable .safetensors file ({e})") from e
  return _from_torch_names(path, tensors, convs)


def read_keras_h5(path: str, convs: Sequence[str]) -> Weights:
  """Reads Keras' VGG19 `.h5` as is: HWIO kernels taking Caffe-style BGR input."""
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConversionError(f"reading {path} needs h5py (pip install h5py)") from e
  weights = {}
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise ConversionError(f"{path}: not a readable HDF5 file ({e})") from e
  with f:
    root = f["model_weights"] if "model_weights" in f else f  # a full model save
    for conv in convs:
      name = keras_layer_name(conv)
      if name not in root:
        raise ConversionError(f"{path}: missing Keras layer {name!r} ({conv}); found "
                              f"{sorted(root)[:6]}")
      datasets = []
      root[name].visititems(
          lambda key, obj: datasets.append((key, obj[()])) if isinstance(obj, h5py.Dataset)
          else None)
      kernels = [(k, v) for k, v in datasets if v.ndim == 4]
      biases = [(k, v) for k, v in datasets if v.ndim == 1]
      if len(kernels) != 1 or len(biases) != 1:
        raise ConversionError(f"{path}: layer {name!r} should hold one 4-D kernel and one "
                              f"bias, found {[(k, v.shape) for k, v in datasets]}")
      (kernel_key, kernel), (_, bias) = kernels[0], biases[0]
      _check_shapes(path, f"{name}/{kernel_key}", kernel, bias, conv, "HWIO")
      weights[conv] = (kernel.astype(np.float32), bias.astype(np.float32))
  return weights


def fold_caffe_preprocessing(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Rewrites a conv1_1 taking Caffe-style input to take torchvision-style input.

  Caffe/Keras: x_k[bgr] = 255 * x01[rgb] - caffe_mean. torchvision:
  x_t = (x01 - mean) / std, so x_k[bgr j] = 255 std[c] x_t[c] + (255 mean[c] -
  caffe_mean[c]) with c = 2 - j. The scale and channel flip go into the kernel;
  the (|.| < 0.5) offset goes into the bias, exact away from the zero padding.

  Args:
    kernel: [3, 3, 3 (BGR), 64] HWIO kernel.
    bias: [64] bias.

  Returns:
    (kernel [3, 3, 3 (RGB), 64], bias [64]) for torchvision-normalised RGB input.
  """
  std = np.asarray(vgg.IMAGENET_STD, np.float64)
  offset = 255.0 * np.asarray(vgg.IMAGENET_MEAN, np.float64) - np.asarray(_CAFFE_MEAN_RGB)
  rgb_kernel = kernel[:, :, ::-1, :].astype(np.float64)
  new_bias = bias + np.einsum("hwco,c->o", rgb_kernel, offset)
  new_kernel = rgb_kernel * (255.0 * std)[None, None, :, None]
  return new_kernel.astype(np.float32), new_bias.astype(np.float32)


def read_weights(path: str, layer: str = "relu4_3") -> Weights:
  """The HWIO weights in `path` of the convolutions `VGG19(layer=layer)` runs, as stored."""
  convs = vgg.convs_up_to(layer)
  suffix = os.path.splitext(path)[1].lower()
  if suffix in _TORCH_SUFFIXES:
    return read_torch(path, convs)
  if suffix in _SAFETENSORS_SUFFIXES:
    return read_safetensors(path, convs)
  if suffix in _H5_SUFFIXES:
    return read_keras_h5(path, convs)
  raise ConversionError(f"{path}: unknown extension {suffix!r}; expected one of "
                        f"{_TORCH_SUFFIXES + _SAFETENSORS_SUFFIXES + _H5_SUFFIXES}")


def convert(input_path: str | os.PathLike, output_path: str | os.PathLike,
            layer: str = "relu4_3") -> tuple[str, ...]:
  """Converts `input_path` to the `.npz` `vgg.load_params` reads.

  Args:
    input_path: torchvision `.pth`/`.pt`, `.safetensors`, or Keras `.h5`.
    output_path: the `.npz` to write (atomically).
    layer: keep the convolutions up to this VGG19 layer.

  Returns:
    The names of the convolutions written.

  Raises:
    FileNotFoundError: no input file.
    ConversionError: bad extension, key, shape, or output path.
    ValueError: unknown layer.
  """
  input_path, output_path = os.fspath(input_path), os.fspath(output_path)
  vgg.check_layer(layer)
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f"input weights not found: {input_path!r}")
  if not output_path.endswith(".npz"):
    raise ConversionError(f"output {output_path!r} must end in .npz")
  if os.path.exists(output_path) and os.path.samefile(input_path, output_path):
    raise ConversionError(f"refusing to overwrite the input {input_path!r}")
  weights = read_weights(input_path, layer)
  if os.path.splitext(input_path)[1].lower() in _H5_SUFFIXES:
    weights["conv1_1"] = fold_caffe_preprocessing(*weights["conv1_1"])
  arrays = {"meta.format": np.asarray(vgg.FILE_FORMAT)}
  for conv, (kernel, bias) in weights.items():
    arrays[f"{conv}.kernel"] = np.ascontiguousarray(kernel, np.float32)
    arrays[f"{conv}.bias"] = np.ascontiguousarray(bias, np.float32)
  atomic_write(output_path, lambda f: np.savez(f, **arrays))
  return tuple(weights)


def _parser() -> argparse.ArgumentParser:
  p = cli.parser("python -m flax_gradnet.convert_vgg19",
                 "Convert ImageNet VGG19 weights (torchvision .pth/.safetensors or Keras .h5) "
                 "to the .npz flax_gradnet.vgg.load_params reads. Downloads nothing.", __doc__)
  p.add_argument("--input", required=True, help="vgg19-dcbb9e9d.pth, .safetensors or .h5")
  cli.add_output_flag(p, "the .npz to write")
  p.add_argument("--layer", default="relu4_3",
                 help="keep the convolutions up to this layer (default relu4_3, the paper's; "
                      "relu5_4 keeps all 16)")
  cli.add_overwrite_flag(p, "replace an existing --output (never the input)")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry; returns the exit status (0 written, 2 nothing written)."""
  args = _parser().parse_args(argv)
  if not args.overwrite and os.path.lexists(args.output):
    return cli.fail(f"{args.output} exists (pass --overwrite to replace it)")
  try:
    convs = convert(args.input, args.output, args.layer)
  except (FileNotFoundError, ValueError) as e:  # ConversionError is a ValueError.
    return cli.fail(str(e))
  print(f"wrote {args.output}: {len(convs)} convolutions ({convs[0]} ... {convs[-1]}), "
        f"enough for VGG19 layers up to {args.layer}")
  return cli.EXIT_OK


def run() -> None:
  """Console entry point `flax-gradnet-convert-vgg19`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
