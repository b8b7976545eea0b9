"""VGG19 feature extractor for the content loss (Sec. 3.2.1, Eq. (8)).

The layer layout is torchvision's `vgg19().features` (configuration "E" of
Simonyan & Zisserman [42]): 3x3 convolutions with padding 1, each followed by a
ReLU, and 2x2 max pooling with stride 2 after each block. Parameters are named
after the layers (`conv1_1` ... `conv5_4`); `TORCHVISION_INDEX` gives the index
of every named layer in `vgg19().features`:

    block 1: conv1_1  0, relu1_1  1, conv1_2  2, relu1_2  3, pool1  4
    block 2: conv2_1  5, relu2_1  6, conv2_2  7, relu2_2  8, pool2  9
    block 3: conv3_1 10, relu3_1 11, conv3_2 12, relu3_2 13,
             conv3_3 14, relu3_3 15, conv3_4 16, relu3_4 17, pool3 18
    block 4: conv4_1 19, relu4_1 20, conv4_2 21, relu4_2 22,
             conv4_3 23, relu4_3 24, conv4_4 25, relu4_4 26, pool4 27
    block 5: conv5_1 28, relu5_1 29, conv5_2 30, relu5_2 31,
             conv5_3 32, relu5_3 33, conv5_4 34, relu5_4 35, pool5 36

`VGG19(layer=name)` on an NHWC array gives the activations of torchvision's
`vgg19().features[:TORCHVISION_INDEX[name] + 1]` on the same array in NCHW.
The paper's "ReLU4-3" is `relu4_3` = `features[:25]`.

No weights ship with this package and nothing downloads them: convert
torchvision's ImageNet VGG19 file yourself with `flax_gradnet.convert_vgg19`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# (width, convolutions) of the five blocks of VGG19 (configuration "E").
BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


def _layer_sequence() -> tuple[tuple[str, int], ...]:
  """(name, output width) of every layer of `vgg19().features`, in order."""
  layers = []
  for b, (width, num_convs) in enumerate(BLOCKS, start=1):
    for i in range(1, num_convs + 1):
      layers += [(f"conv{b}_{i}", width), (f"relu{b}_{i}", width)]
    layers.append((f"pool{b}", width))
  return tuple(layers)


LAYERS = tuple(name for name, _ in _layer_sequence())
TORCHVISION_INDEX = {name: i for i, name in enumerate(LAYERS)}
CONV_LAYERS = tuple(name for name in LAYERS if name.startswith("conv"))
CONV_WIDTH = {name: width for name, width in _layer_sequence() if name.startswith("conv")}
CONV_IN_CHANNELS = {name: cin for name, cin in zip(CONV_LAYERS, (3,) + tuple(
    CONV_WIDTH[n] for n in CONV_LAYERS[:-1]))}

# torchvision's ImageNet statistics (RGB, images in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The file `flax_gradnet.convert_vgg19` writes; `load_params` refuses others.
FILE_FORMAT = "flax_gradnet.vgg19/1"

HOW_TO_CONVERT = (
    "Make it from torchvision's ImageNet VGG19 weights, which you download yourself "
    "(https://download.pytorch.org/models/vgg19-dcbb9e9d.pth, the file behind "
    "torchvision.models.vgg19(weights='IMAGENET1K_V1')), with\n"
    "  python -m flax_gradnet.convert_vgg19 --input vgg19-dcbb9e9d.pth "
    "--output vgg19_relu4_3.npz\n"
    "(Keras' vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 or a .safetensors "
    "file with torchvision key names also work as --input). Without VGG19 weights, "
    "train with the pixel content loss stand-in instead.")


def check_layer(layer: str) -> str:
  """Returns `layer` if it names a layer of VGG19, else raises ValueError."""
  if layer not in TORCHVISION_INDEX:
    raise ValueError(f"unknown VGG19 layer {layer!r}; expected one of {', '.join(LAYERS)}")
  return layer


def convs_up_to(layer: str) -> tuple[str, ...]:
  """The convolutions that `VGG19(layer=layer)` runs (and needs weights for)."""
  last = TORCHVISION_INDEX[check_layer(layer)]
  return tuple(name for name in CONV_LAYERS if TORCHVISION_INDEX[name] <= last)


class VGG19(nn.Module):
  """torchvision's `vgg19().features`, NHWC, cut after `layer`.

  Applies no input normalisation (see `imagenet_normalize`/`make_feature_fn`).

  Attributes:
    layer: the last layer run and returned, e.g. "relu4_3" (see TORCHVISION_INDEX).
    dtype: compute precision; parameters stay `param_dtype`.
    param_dtype: parameter precision.
  """

  layer: str = "relu4_3"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps [N, H, W, 3] images to the [N, H', W', C] activations of `layer`."""
    check_layer(self.layer)
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"VGG19 expects NHWC RGB images [N, H, W, 3], got shape {x.shape}")
    x = jnp.asarray(x, self.dtype)
    for name, width in _layer_sequence():
      if name.startswith("conv"):
        x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    param_dtype=self.param_dtype, name=name)(x)
      elif name.startswith("relu"):
        x = nn.relu(x)
      else:  # torchvision's MaxPool2d(2, 2) floors odd sizes, as VALID does.
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      if name == self.layer:
        return x
    raise AssertionError("unreachable: check_layer accepted an unknown layer")


def imagenet_normalize(x: jax.Array) -> jax.Array:
  """Maps images in [-1, 1] to torchvision's ImageNet input convention.

  Args:
    x: [..., 3] RGB images in [-1, 1].

  Returns:
    (x01 - mean) / std with x01 = (x + 1) / 2 and ImageNet's RGB mean/std.
  """
  x = jnp.asarray(x)
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  mean = jnp.asarray(IMAGENET_MEAN, dtype)
  std = jnp.asarray(IMAGENET_STD, dtype)
  return ((x.astype(dtype) + 1.0) * 0.5 - mean) / std


def as_rgb(x: jax.Array) -> jax.Array:
  """[..., 3] images unchanged; grayscale [..., 1] repeated to three channels.

  Raises:
    ValueError: any other channel count (VGG19 is an RGB network; train such
      models with the pixel content loss, `config.content_loss="pixel"`).
  """
  x = jnp.asarray(x)
  if x.shape[-1] == 1:
    return jnp.repeat(x, 3, axis=-1)
  if x.shape[-1] != 3:
    raise ValueError(f"the VGG19 content loss takes RGB (3-channel) or grayscale (1-channel) "
                     f"images, got shape {x.shape}; use config.content_loss='pixel' for "
                     "other channel counts")
  return x


def load_params(path: str | os.PathLike) -> dict:
  """Reads a file written by `python -m flax_gradnet.convert_vgg19`.

  Args:
    path: the converted `.npz` (read with `allow_pickle=False`).

  Returns:
    variables `{"params": {"conv1_1": {"kernel", "bias"}, ...}}` for
    `VGG19().apply(variables, x)`; kernels are HWIO float32 arrays.

  Raises:
    FileNotFoundError: no file at `path` (the message says how to make one).
    ValueError: the file is not a converted VGG19 file or has wrong shapes.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"VGG19 weights not found: {path!r}. {HOW_TO_CONVERT}")
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
  except (OSError, ValueError) as e:
    raise ValueError(f"{path!r} is not a VGG19 .npz written by "
                     f"flax_gradnet.convert_vgg19 ({e}). {HOW_TO_CONVERT}") from e
  file_format = arrays.pop("meta.format", None)
  if file_format is None or str(file_format) != FILE_FORMAT:
    raise ValueError(f"{path!r} is not a VGG19 .npz written by flax_gradnet.convert_vgg19 "
                     f"(its 'meta.format' is {file_format!r}, expected {FILE_FORMAT!r}). "
                     f"{HOW_TO_CONVERT}")
  params = {}
  for name in CONV_LAYERS:
    if f"{name}.kernel" not in arrays:
      break  # Converted files keep a prefix of the convolutions.
    kernel, bias = arrays[f"{name}.kernel"], arrays.get(f"{name}.bias")
    expected = (3, 3, CONV_IN_CHANNELS[name], CONV_WIDTH[name])
    if kernel.shape != expected or bias is None or bias.shape != expected[-1:]:
      raise ValueError(f"{path!r}: {name} has kernel {kernel.shape} and bias "
                       f"{None if bias is None else bias.shape}, expected {expected} and "
                       f"{expected[-1:]}")
    params[name] = {"kernel": np.asarray(kernel, np.float32), "bias": np.asarray(bias, np.float32)}
  if not params:
    raise ValueError(f"{path!r} holds no VGG19 convolutions. {HOW_TO_CONVERT}")
  return {"params": params}


def make_feature_fn(variables: dict, layer: str = "relu4_3",
                    dtype: Dtype = jnp.float32) -> Callable[[jax.Array], jax.Array]:
  """The frozen feature map phi of Eq. (8).

  Args:
    variables: VGG19 variables, e.g. from `load_params`.
    layer: the VGG19 layer whose activations are returned ("relu4_3" in the paper).
    dtype: compute precision of the VGG19 pass.

  Returns:
    `phi(x)`: [N, H, W, 3] RGB images in [-1, 1] -> [N, H', W', C] activations of
    `layer` on the ImageNet-normalised images. Grayscale images [N, H, W, 1]
    are repeated to three equal channels first (the grey an RGB network sees),
    so a grey pair's loss equals that of its RGB replication. The VGG19
    parameters are under `stop_gradient`, so no gradient ever reaches them.

  Raises:
    ValueError: unknown layer, or `variables` lack a convolution `layer` needs;
      `phi` of images with other than 1 or 3 channels (at trace time).

  Arrays captured by a jitted function become compile-time constants (tens of
  MB here); in a jitted train step, pass the VGG19 variables in as an argument
  (e.g. in the train state) and call `make_feature_fn` inside the step.
  """
  params = variables.get("params", {})
  missing = [name for name in convs_up_to(layer) if name not in params]
  if missing:
    raise ValueError(f"VGG19 layer {layer!r} needs {', '.join(missing)}, which the weights "
                     f"lack; reconvert with `python -m flax_gradnet.convert_vgg19 --layer "
                     f"{layer} ...`")
  model = VGG19(layer=layer, dtype=dtype)

  def feature_fn(x: jax.Array) -> jax.Array:
    return model.apply(jax.lax.stop_gradient(variables), imagenet_normalize(as_rgb(x)))

  return feature_fn
