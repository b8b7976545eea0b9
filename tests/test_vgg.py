"""VGG19 parity with a torchvision-layout torch model, and the converter's paths."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import import_or_skip
from flax_gradnet import convert_vgg19, vgg

# They write the files the converter reads (most tests here need one of them).
torch = import_or_skip("torch", "convert")
nn = torch.nn
h5py = import_or_skip("h5py", "convert")
save_file = import_or_skip("safetensors.numpy", "convert").save_file

# torchvision's vgg19 configuration "E", written out here (torchvision is not a dependency).
_CFG_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"]
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


class TorchVGG19(nn.Module):
  """torchvision.models.vgg19's state-dict layout: `features.<i>`, plus a classifier."""

  def __init__(self):
    super().__init__()
    layers, cin = [], 3
    for v in _CFG_E:
      if v == "M":
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
      else:
        layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        cin = v
    self.features = nn.Sequential(*layers)
    self.classifier = nn.Linear(4, 2)  # converters must ignore non-feature keys


@pytest.fixture(scope="module")
def torch_vgg():
  torch.manual_seed(0)
  model = TorchVGG19().eval()
  with torch.no_grad():
    for m in model.features:
      if isinstance(m, nn.Conv2d):  # torchvision's init, plus nonzero biases to test them
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(m.bias, std=0.1)
  return model


@pytest.fixture(scope="module")
def image():
  return np.random.default_rng(0).uniform(-1, 1, (1, 40, 48, 3)).astype(np.float32)


def _torch_features(model, x_nhwc, layer):
  with torch.no_grad():
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    y = model.features[:vgg.TORCHVISION_INDEX[layer] + 1](x)
  return y.numpy().transpose(0, 2, 3, 1)


def _flax_features(variables, x_nhwc, layer):
  return np.asarray(jax.jit(vgg.VGG19(layer=layer).apply)(variables, x_nhwc))


def _assert_close(actual, expected, rtol=1e-4):
  assert actual.shape == expected.shape
  scale = np.abs(expected).max()
  assert scale > 0
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def _random_variables(layer, seed=0):
  """He-initialised VGG19 variables up to `layer` (numpy; faster than a jitted init on CPU)."""
  rng = np.random.default_rng(seed)
  params = {}
  for conv in vgg.convs_up_to(layer):
    cin, cout = vgg.CONV_IN_CHANNELS[conv], vgg.CONV_WIDTH[conv]
    params[conv] = {"kernel": rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)),
                    "bias": rng.normal(0, 0.1, cout)}
  return jax.tree.map(lambda a: np.asarray(a, np.float32), {"params": params})


def _keras_h5(path, model):
  """Writes the torch model's weights in the layout of Keras' VGG19 notop .h5."""
  with h5py.File(path, "w") as f:
    names = []
    for conv in vgg.CONV_LAYERS:
      name = convert_vgg19.keras_layer_name(conv)
      layer = model.features[vgg.TORCHVISION_INDEX[conv]]
      group = f.create_group(name)
      weight_names = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
      group.attrs["weight_names"] = weight_names
      group[weight_names[0].decode()] = layer.weight.detach().numpy().transpose(2, 3, 1, 0)
      group[weight_names[1].decode()] = layer.bias.detach().numpy()
      names.append(name.encode())
    for name in ("block1_pool", "block2_pool"):
      f.create_group(name).attrs["weight_names"] = []
    f.attrs["layer_names"] = names


def test_layer_names_match_torchvision_indices(torch_vgg):
  assert len(vgg.LAYERS) == len(torch_vgg.features) == 37
  kinds = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
  for name, index in vgg.TORCHVISION_INDEX.items():
    assert isinstance(torch_vgg.features[index], kinds[name[:4]]), name
  assert vgg.TORCHVISION_INDEX["relu4_3"] == 24
  assert [vgg.TORCHVISION_INDEX[c] for c in vgg.CONV_LAYERS[:5]] == [0, 2, 5, 7, 10]


def test_pth_conversion_matches_torch(torch_vgg, image, tmp_path):
  pth, out = tmp_path / "vgg19.pth", tmp_path / "vgg19_relu4_3.npz"
  torch.save(torch_vgg.state_dict(), pth)
  assert convert_vgg19.main(["--input", str(pth), "--output", str(out)]) == 0
  variables = vgg.load_params(out)
  assert tuple(variables["params"]) == vgg.CONV_LAYERS[:11]  # conv1_1 ... conv4_3
  for layer in ("relu4_3", "pool2"):
    _assert_close(_flax_features(variables, image, layer), _torch_features(torch_vgg, image, layer))


def test_safetensors_conversion_matches_torch(torch_vgg, image, tmp_path):
  path, out = tmp_path / "vgg19.safetensors", tmp_path / "vgg19_all.npz"
  save_file({k: v.numpy() for k, v in torch_vgg.state_dict().items()}, str(path))
  convert_vgg19.convert(path, out, layer="relu5_4")
  variables = vgg.load_params(out)
  assert tuple(variables["params"]) == vgg.CONV_LAYERS  # all 16
  _assert_close(_flax_features(variables, image, "relu3_2"),
                _torch_features(torch_vgg, image, "relu3_2"))


def test_bare_features_state_dict_is_accepted(torch_vgg, image, tmp_path):
  pth, out = tmp_path / "features.pth", tmp_path / "out.npz"
  torch.save(torch_vgg.features.state_dict(), pth)  # keys "0.weight", ...
  convert_vgg19.convert(pth, out, layer="relu1_2")
  _assert_close(_flax_features(vgg.load_params(out), image, "relu1_2"),
                _torch_features(torch_vgg, image, "relu1_2"))


def test_keras_h5_weights_as_stored_match_torch(torch_vgg, image, tmp_path):
  path = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
  _keras_h5(path, torch_vgg)
  weights = convert_vgg19.read_weights(str(path), "relu4_3")
  variables = {"params": {c: {"kernel": k, "bias": b} for c, (k, b) in weights.items()}}
  _assert_close(_flax_features(variables, image, "relu4_3"),
                _torch_features(torch_vgg, image, "relu4_3"))


def test_keras_h5_conversion_folds_caffe_preprocessing(torch_vgg, image, tmp_path):
  """Converted Keras weights on torchvision-normalised RGB == Keras weights on Caffe BGR."""
  path, out = tmp_path / "keras.h5", tmp_path / "keras.npz"
  _keras_h5(path, torch_vgg)
  assert convert_vgg19.main(["--input", str(path), "--output", str(out)]) == 0
  variables = vgg.load_params(out)
  caffe = ((image + 1) * 127.5)[..., ::-1] - _CAFFE_MEAN_BGR  # keras preprocess_input, "caffe"
  ours = np.asarray(jax.jit(vgg.make_feature_fn(variables, "conv1_1"))(image))
  theirs = _torch_features(torch_vgg, caffe, "conv1_1")
  # Exact away from the zero padding; on the border, off by at most the mean
  # offset (< 0.5 in [0, 255] units) times the kernel's absolute sum.
  _assert_close(ours[:, 1:-1, 1:-1], theirs[:, 1:-1, 1:-1])
  border_bound = 0.5 * torch_vgg.features[0].weight.detach().abs().sum(dim=(1, 2, 3)).numpy()
  assert np.all(np.abs(ours - theirs) <= border_bound + 1e-3)
  _assert_close(jax.jit(vgg.make_feature_fn(variables, "relu4_3"))(image),
                _torch_features(torch_vgg, caffe, "relu4_3"), rtol=1e-2)


def test_imagenet_normalize():
  x = np.random.default_rng(1).uniform(-1, 1, (2, 4, 5, 3)).astype(np.float32)
  expected = ((x + 1) / 2 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(jax.jit(vgg.imagenet_normalize)(x), expected, rtol=1e-6, atol=1e-6)


def test_feature_fn_freezes_vgg_params():
  image = np.random.default_rng(2).uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
  variables = _random_variables("relu1_2")
  grads = jax.jit(jax.grad(lambda v, x: jnp.sum(vgg.make_feature_fn(v, "relu1_2")(x)),
                          argnums=(0, 1)))(variables, image)
  assert all(not np.any(g) for g in jax.tree.leaves(grads[0]))
  assert np.any(grads[1])


def test_feature_fn_needs_the_layer_weights():
  variables = _random_variables("relu1_2")
  with pytest.raises(ValueError, match="conv2_1.*--layer relu2_1"):
    vgg.make_feature_fn(variables, "relu2_1")


def test_unknown_layer():
  with pytest.raises(ValueError, match="unknown VGG19 layer 'relu4_5'"):
    vgg.VGG19(layer="relu4_5").init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="unknown VGG19 layer"):
    convert_vgg19.convert("whatever.pth", "out.npz", layer="fc7")


def test_vgg_rejects_non_rgb_nhwc():
  with pytest.raises(ValueError, match="NHWC RGB"):
    vgg.VGG19(layer="relu1_1").init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 8, 8)))


def test_load_params_missing_file_says_how_to_convert(tmp_path):
  with pytest.raises(FileNotFoundError) as info:
    vgg.load_params(tmp_path / "vgg19_relu4_3.npz")
  message = str(info.value)
  assert "vgg19_relu4_3.npz" in message
  assert ("python -m flax_gradnet.convert_vgg19 --input vgg19-dcbb9e9d.pth "
          "--output vgg19_relu4_3.npz") in message
  assert "torchvision" in message


def test_load_params_rejects_foreign_npz(tmp_path):
  path = tmp_path / "other.npz"
  np.savez(path, conv1_1=np.zeros(3))
  with pytest.raises(ValueError, match="meta.format"):
    vgg.load_params(path)


def test_cli_missing_input(tmp_path, capsys):
  assert convert_vgg19.main(["--input", str(tmp_path / "nope.pth"),
                             "--output", str(tmp_path / "out.npz")]) == 2  # nothing ran
  assert "nope.pth" in capsys.readouterr().err
  assert not (tmp_path / "out.npz").exists()


def test_wrong_shape_names_file_and_key(torch_vgg, tmp_path):
  state = dict(torch_vgg.state_dict())
  state["features.5.weight"] = torch.zeros(128, 32, 3, 3)
  pth = tmp_path / "bad.pth"
  torch.save(state, pth)
  with pytest.raises(convert_vgg19.ConversionError, match=r"bad\.pth: features\.5\.weight "
                     r"\(conv2_1\) has shape \(128, 32, 3, 3\), expected \(128, 64, 3, 3\)"):
    convert_vgg19.convert(pth, tmp_path / "out.npz")
  assert not (tmp_path / "out.npz").exists()


def test_missing_key_names_file_and_key(tmp_path):
  path = tmp_path / "partial.safetensors"
  save_file({"features.0.weight": np.zeros((64, 3, 3, 3), np.float32),
             "features.0.bias": np.zeros(64, np.float32)}, str(path))
  with pytest.raises(convert_vgg19.ConversionError, match=r"partial\.safetensors: missing "
                     r"features\.2\.weight/features\.2\.bias \(conv1_2\)"):
    convert_vgg19.convert(path, tmp_path / "out.npz")


def test_keras_wrong_shape(tmp_path):
  path = tmp_path / "bad.h5"
  with h5py.File(path, "w") as f:
    f["block1_conv1/block1_conv1/kernel:0"] = np.zeros((3, 3, 1, 64), np.float32)
    f["block1_conv1/block1_conv1/bias:0"] = np.zeros(64, np.float32)
  with pytest.raises(convert_vgg19.ConversionError, match=r"bad\.h5: block1_conv1/.*kernel:0 "
                     r"\(conv1_1\) has shape \(3, 3, 1, 64\)"):
    convert_vgg19.convert(path, tmp_path / "out.npz")


def test_bad_extension(tmp_path):
  path = tmp_path / "vgg19.bin"
  path.write_bytes(b"\0")
  with pytest.raises(convert_vgg19.ConversionError, match="unknown extension '.bin'"):
    convert_vgg19.convert(path, tmp_path / "out.npz")


def test_refuses_pickled_objects(tmp_path):
  path = tmp_path / "module.pth"
  torch.save(nn.Linear(2, 2), path)  # a whole pickled module, not a state dict
  with pytest.raises(convert_vgg19.ConversionError, match="weights-only"):
    convert_vgg19.convert(path, tmp_path / "out.npz")


def test_never_overwrites_input(torch_vgg, tmp_path):
  pth = tmp_path / "vgg19.pth"
  torch.save(torch_vgg.features[:3].state_dict(), pth)
  before = pth.read_bytes()
  link = tmp_path / "alias.npz"
  os.symlink(pth, link)
  with pytest.raises(convert_vgg19.ConversionError, match="refusing to overwrite the input"):
    convert_vgg19.convert(pth, link, layer="relu1_1")
  with pytest.raises(convert_vgg19.ConversionError, match="must end in .npz"):
    convert_vgg19.convert(pth, pth, layer="relu1_1")
  assert pth.read_bytes() == before


def test_output_is_written_atomically(torch_vgg, tmp_path):
  pth, out = tmp_path / "vgg19.pth", tmp_path / "out.npz"
  torch.save(torch_vgg.features[:3].state_dict(), pth)
  out.write_bytes(b"old")
  convert_vgg19.convert(pth, out, layer="relu1_2")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz", "vgg19.pth"]  # no temp left
  assert tuple(vgg.load_params(out)["params"]) == ("conv1_1", "conv1_2")
