"""Small trained generators shipped with the package, and the tool that packs them.

    from flax_gradnet import inference
    module, params, restored = inference.restore()   # pretrained.DEFAULT_MODEL
    fn = inference.deblur_fn_for(module, params, restored.options)

    python -m flax_gradnet.pretrained --workdir=workdirs/gradnet_s_synth --name=gradnet_s_synth
    python -m flax_gradnet.pretrained --list

One shipped model is a folder `<root>/<name>/` holding

    config.json            the training config, byte for byte the workdir's config.json
    params.msgpack         the generator's parameters only, float32
                           (`flax.serialization.msgpack_serialize` of the params dict)
    checksums.json         {"params.msgpack": sha256 hex, "config.json": sha256 hex}
    metadata.json          source workdir, step, packing date, versions, + `pack(metadata=)`
    reference_input.png    a 48x64 uint8 RGB crop of scikit-image's `chelsea`
    reference_output.npy   float32 [48, 64, C] output in [-1, 1] of the model on it
                           (float32 compute, whole image, `inference.deblur_array`;
                           C = model.channels, the input converted to grey for 1)

`<root>` is this package's folder, or the folder named by the environment
variable `FLAX_GRADNET_PRETRAINED_DIR` when it is set (tests, private models);
every function also takes an explicit `root=`.

Users get a shipped model through `inference.restore(model=NAME)`, which
returns its recorded inference options too; `load` is its building block. A
shipped model loads through the same path as a training workdir
(`workdir.load_config` + `models.generator_from_config`), and its
parameter tree is checked against the tree the current code builds (same keys,
same shapes: `checkpoints.diff_params`): after a change of the generator's
code, weights that no longer fit fail loudly instead of loading wrongly. The reference pair lets a test
check that they still compute what they computed when packed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Any

__all__ = [
    "DEFAULT_MODEL", "ENV_VAR", "PACKAGE_DIR", "MAX_PARAMS_BYTES", "available", "model_dir",
    "verify", "load", "pack", "read_metadata", "reference_pair", "file_sha256",
]

DEFAULT_MODEL = "gradnet_s_lf"
ENV_VAR = "FLAX_GRADNET_PRETRAINED_DIR"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
MAX_PARAMS_BYTES = 20 * 1024 * 1024

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"
CHECKSUMS_FILE = "checksums.json"
METADATA_FILE = "metadata.json"
REFERENCE_INPUT_FILE = "reference_input.png"
REFERENCE_OUTPUT_FILE = "reference_output.npy"
CHECKSUMMED_FILES = (PARAMS_FILE, CONFIG_FILE)
MODEL_FILES = (CONFIG_FILE, PARAMS_FILE, CHECKSUMS_FILE, METADATA_FILE, REFERENCE_INPUT_FILE,
               REFERENCE_OUTPUT_FILE)
REFERENCE_CROP = "skimage.data.chelsea()[100:148, 200:264]"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The batch and size the parameter tree is checked at (any H x W builds the
# same tree); the channels are the module's (`_expected_params`).
_INIT_NHW = (1, 16, 16)


def _root(root: str | None) -> str:
  """`root`, else $FLAX_GRADNET_PRETRAINED_DIR, else this package's folder: a
  local folder (models are installed by renaming a temporary folder), absolute.

  Raises:
    ValueError: a URI (gs://...), which would otherwise become a local ./gs:/ folder.
  """
  if root is None:
    root = os.environ.get(ENV_VAR) or PACKAGE_DIR
  if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", os.fspath(root)):
    raise ValueError(f"the models' folder must be local, got {root!r}: pack into a local "
                     "folder and copy it")
  return os.path.abspath(os.path.expanduser(root))


def available(root: str | None = None) -> list[str]:
  """Names of the models under `root`: its subfolders that hold a config.json (sorted).

  Args:
    root: the folder to look in (default: $FLAX_GRADNET_PRETRAINED_DIR, else
      this package's folder). A missing folder holds no models.
  """
  root = _root(root)
  if not os.path.isdir(root):
    return []
  return sorted(n for n in os.listdir(root)
                if not n.startswith((".", "_"))  # temporary folders of `pack`, __pycache__
                and os.path.isfile(os.path.join(root, n, CONFIG_FILE)))


def _check_name(name: str) -> None:
  if not isinstance(name, str) or not _NAME_RE.match(name):
    raise ValueError(f"invalid model name {name!r}: use letters, digits, '_', '-' and '.', "
                     "starting with a letter or digit")


def model_dir(name: str, root: str | None = None) -> str:
  """The folder of model `name` under `root` (see `available`).

  Raises:
    FileNotFoundError: no such folder; the message lists the available models.
  """
  _check_name(name)
  root = _root(root)
  path = os.path.join(root, name)
  if not os.path.isdir(path):
    names = available(root)
    listed = ", ".join(names) if names else "none"
    raise FileNotFoundError(
        f"no shipped model {name!r} in {root} (available: {listed}); pack one from a training "
        f"workdir with `python -m flax_gradnet.pretrained --workdir=W --name={name}`"
        + (f", or point ${ENV_VAR} at a folder of models" if root == PACKAGE_DIR else ""))
  return path


def file_sha256(path: str) -> str:
  """The sha256 hex digest of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _read_json(path: str) -> Any:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing: the model folder is incomplete "
                            "(reinstall the package, or re-pack the model)")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}): the install is damaged "
                     "(reinstall the package, or re-pack the model)") from e


def verify(name: str, root: str | None = None) -> str:
  """Checks params.msgpack and config.json against checksums.json; returns the folder.

  Raises:
    FileNotFoundError: the model, checksums.json or a checksummed file is
      missing (the message names it).
    ValueError: a file's sha256 differs from checksums.json (the message names
      the file), or checksums.json is unreadable.
  """
  path = model_dir(name, root)
  checksums = _read_json(os.path.join(path, CHECKSUMS_FILE))
  if not isinstance(checksums, dict):
    raise ValueError(f"{os.path.join(path, CHECKSUMS_FILE)} is not a JSON object: the install "
                     "is damaged (reinstall the package, or re-pack the model)")
  for fname in CHECKSUMMED_FILES:
    fpath = os.path.join(path, fname)
    if fname not in checksums:
      raise ValueError(f"{os.path.join(path, CHECKSUMS_FILE)} has no checksum for {fname}: the "
                       "install is damaged (reinstall the package, or re-pack the model)")
    if not os.path.isfile(fpath):
      raise FileNotFoundError(f"{fpath} is missing: the model {name!r} is incomplete "
                              "(reinstall the package, or re-pack the model)")
    got = file_sha256(fpath)
    if got != checksums[fname]:
      raise ValueError(f"{fpath} does not match its sha256 in {CHECKSUMS_FILE} (got {got}, "
                       f"expected {checksums[fname]}): the install of model {name!r} is damaged; "
                       "reinstall the package, or re-pack the model")
  return path


def read_metadata(name: str, root: str | None = None) -> dict:
  """metadata.json of model `name` (not checksummed: informational only)."""
  return _read_json(os.path.join(model_dir(name, root), METADATA_FILE))


def load(name: str = DEFAULT_MODEL, *, root: str | None = None, dtype: Any = None):
  """Loads shipped model `name` as `(module, params)`.

  The building block of `inference.restore(model=name)`, which users call (it
  also returns the model's recorded inference options). The files are verified
  (`verify`), the module is built from config.json as for a training workdir
  (`models.generator_from_config`), and the parameters are checked against the
  tree that module's `init` declares (`checkpoints.diff_params`).

  Args:
    name: the model (`available()` lists them).
    root: the models' folder (see `available`).
    dtype: compute dtype of the module (default: the config's `compute_dtype`).

  Raises:
    FileNotFoundError: no such model, or a missing file (named).
    ValueError: a damaged file (named), or parameters that do not fit the module.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top

  # pylint: disable=g-import-not-at-top
  from flax_gradnet import checkpoints
  from flax_gradnet import workdir as workdir_lib
  from flax_gradnet.models import generator_from_config
  # pylint: enable=g-import-not-at-top

  path = verify(name, root)
  config = workdir_lib.load_config(path)
  module = generator_from_config(config, dtype)
  params_path = os.path.join(path, PARAMS_FILE)
  with open(params_path, "rb") as f:
    try:
      params = serialization.msgpack_restore(f.read())
    except Exception as e:  # msgpack raises several types on bad bytes
      raise ValueError(f"{params_path} cannot be decoded ({type(e).__name__}: {e}): reinstall "
                       "the package, or re-pack the model") from e
  expected = _expected_params(module)
  diff = checkpoints.diff_params(params, expected)
  if diff:
    raise ValueError(f"{params_path} does not fit the generator its config.json describes under "
                     "the current code (were the weights packed by an incompatible version?): "
                     + diff.summary())
  params = jax.tree_util.tree_map(lambda p, e: jnp.asarray(p, e.dtype), params, expected)
  return module, params


def _expected_params(module: Any) -> Any:
  """The parameter tree (`jax.ShapeDtypeStruct` leaves) that `module.init` declares."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jax.ShapeDtypeStruct(_INIT_NHW + (module.channels,), jnp.float32)
  return jax.eval_shape(module.init, jax.random.key(0), x)["params"]


def reference_pair(name: str, root: str | None = None):
  """(reference input uint8 [H, W, 3], reference output float32 [H, W, 3]) of a model."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from flax_gradnet import image_io  # pylint: disable=g-import-not-at-top
  path = model_dir(name, root)
  for fname in (REFERENCE_INPUT_FILE, REFERENCE_OUTPUT_FILE):
    if not os.path.isfile(os.path.join(path, fname)):
      raise FileNotFoundError(f"{os.path.join(path, fname)} is missing: the model {name!r} is "
                              "incomplete (reinstall the package, or re-pack the model)")
  return (image_io.read_image(os.path.join(path, REFERENCE_INPUT_FILE)),
          np.load(os.path.join(path, REFERENCE_OUTPUT_FILE)))


def reference_output(module: Any, params: Any, image_uint8: Any):
  """The model's float32 output in [-1, 1] on a uint8 image, as packed: float32
  compute, the whole image at once, through `inference` (input / 127.5 - 1)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from flax_gradnet import image_io, inference  # pylint: disable=g-import-not-at-top
  module = module.clone(dtype=jnp.float32)
  fn = inference.make_deblur_fn(module, params)
  image_uint8 = image_io.to_channels(image_uint8, fn.channels)  # grey for a grayscale model
  return inference.deblur_array(fn, inference.to_float(image_uint8))


def _free_root(name: str, root: str | None, overwrite: bool) -> str:
  """The models' folder (`_root`) after checking that model `name` may be written there."""
  _check_name(name)
  root = _root(root)
  dest = os.path.join(root, name)
  if os.path.lexists(dest) and not overwrite:
    raise _exists_error(dest)
  return root


def _exists_error(dest: str) -> FileExistsError:
  return FileExistsError(f"model folder {dest} exists (pass overwrite=True, or --overwrite, "
                         "to replace it)")


def _serialise_params(params: Any, what: str) -> tuple[Any, bytes]:
  """(float32 params as a plain dict, their msgpack bytes), refused over `MAX_PARAMS_BYTES`."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top

  params = jax.tree_util.tree_map(lambda p: np.asarray(p, np.float32), params)
  params = flax.core.unfreeze(params) if isinstance(params, flax.core.FrozenDict) else params
  payload = serialization.msgpack_serialize(params)
  if len(payload) > MAX_PARAMS_BYTES:
    raise ValueError(f"the generator of {what} serialises to "
                     f"{len(payload) / 2**20:.1f} MiB, over the {MAX_PARAMS_BYTES / 2**20:.0f} MiB "
                     "a shipped model may weigh")
  return params, payload


def _metadata_text(name: str, source: dict, model: Any, params: Any, payload: bytes,
                   metadata: dict | None) -> str:
  """metadata.json's text: where the weights came from (`source`: at least "step"
  and "weights"), what `pack` records, plus the caller's `metadata`."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from clu import parameter_overview  # pylint: disable=g-import-not-at-top

  import flax_gradnet  # pylint: disable=g-import-not-at-top
  meta = {
      "name": name,
      **source,
      "packed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "num_params": int(parameter_overview.count_parameters(params)),
      "params_bytes": len(payload),
      "compute_dtype": str(np.dtype(model.dtype or np.float32)),
      "reference_input": REFERENCE_CROP,
      "reference_output": "float32 compute, whole image, inference.deblur_array; [-1, 1]",
      "versions": {"flax_gradnet": flax_gradnet.__version__, "jax": jax.__version__,
                   "flax": flax.__version__},
  }
  clash = sorted(set(metadata or {}) & set(meta))
  if clash:
    raise ValueError(f"metadata keys {clash} are written by pack itself")
  meta.update(metadata or {})
  return json.dumps(meta, indent=2, sort_keys=True) + "\n"  # fails early if not JSON


def _write_model_files(folder: str, config_text: str, payload: bytes, meta_text: str,
                       reference_input: Any, reference: Any) -> None:
  """Writes a model's files (the module docstring's list) into `folder`."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from flax_gradnet import image_io  # pylint: disable=g-import-not-at-top
  with open(os.path.join(folder, CONFIG_FILE), "w") as f:
    f.write(config_text)
  with open(os.path.join(folder, PARAMS_FILE), "wb") as f:
    f.write(payload)
  checksums = {f: file_sha256(os.path.join(folder, f)) for f in CHECKSUMMED_FILES}
  with open(os.path.join(folder, CHECKSUMS_FILE), "w") as f:
    f.write(json.dumps(checksums, indent=2, sort_keys=True) + "\n")
  with open(os.path.join(folder, METADATA_FILE), "w") as f:
    f.write(meta_text)
  image_io.write_image(os.path.join(folder, REFERENCE_INPUT_FILE), reference_input)
  np.save(os.path.join(folder, REFERENCE_OUTPUT_FILE), np.asarray(reference, np.float32))


def _install_folder(tmp: str, dest: str, root: str, name: str, overwrite: bool) -> None:
  """Renames the finished `tmp` to `dest`, moving an old model aside and back on failure."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the model private
  old = None
  try:
    if os.path.lexists(dest):
      if not overwrite:
        raise _exists_error(dest)
      old = tempfile.mkdtemp(dir=root, prefix=f".tmp-old-{name}-")
      os.rename(dest, os.path.join(old, name))
    try:
      os.rename(tmp, dest)
    except OSError:
      if old is not None:  # put the old model back
        os.rename(os.path.join(old, name), dest)
      raise
  finally:
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)


def pack(workdir: str, name: str, *, step: int | str | None = None, root: str | None = None,
         metadata: dict | None = None, overwrite: bool = False,
         weights: str | None = None) -> str:
  """Packs the generator of a training workdir as shipped model `name`.

  All files are written into a temporary folder beside the destination and
  renamed into place at the end, so a failure never leaves a half-written model.

  Args:
    workdir: a directory written by `python -m flax_gradnet.main` (local, or a
      URI such as gs://BUCKET/run).
    name: the model's name (its folder's name).
    step: the checkpoint step (None = latest; "best": the highest held-out PSNR).
    root: where the model folder goes (see `available`; default: this
      package's folder, or $FLAX_GRADNET_PRETRAINED_DIR).
    metadata: more entries for metadata.json (JSON-serialisable; must not
      reuse the keys `pack` writes itself).
    overwrite: replace an existing model of that name.
    weights: "ema" or "raw" generator weights of the checkpoint; None: the EMA
      when the checkpoint has one (metadata.json's "weights" says which).

  Returns:
    The model's folder.

  Raises:
    FileExistsError: the model exists and not `overwrite`.
    FileNotFoundError / ValueError: from restoring the workdir.
    ValueError: the parameters exceed `MAX_PARAMS_BYTES`, or bad metadata.
  """
  # pylint: disable=g-import-not-at-top
  from flax_gradnet import checkpoints
  from flax_gradnet import workdir as workdir_lib
  # pylint: enable=g-import-not-at-top

  root = _free_root(name, root, overwrite)
  restored = checkpoints.restore_weights(workdir, step, weights=weights)
  path = workdir_lib.workdir_path(workdir)  # a local folder or a URI (gs://...), kept as given
  config_text = (path / workdir_lib.CONFIG_FILE).read_text()
  source = {"source_workdir": str(path), "step": int(restored.step),
            "weights": restored.weights}  # "ema" (moving average) or "raw" generator weights
  return _pack(name, root, overwrite, config_text, restored.model, restored.params,
               source, metadata, f"{workdir} at step {restored.step}")


def _pack(name: str, root: str, overwrite: bool, config_text: str, model: Any, params: Any,
          source: dict, metadata: dict | None, what: str) -> str:
  """Writes model `name` into `root`: every file into a temporary folder, renamed
  into place at the end."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top

  params, payload = _serialise_params(params, what)
  reference_input = np.ascontiguousarray(skimage.data.chelsea()[100:148, 200:264])
  reference = reference_output(model, params, reference_input)
  meta_text = _metadata_text(name, source, model, params, payload, metadata)
  os.makedirs(root, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=root, prefix=f".tmp-pack-{name}-")
  try:
    _write_model_files(tmp, config_text, payload, meta_text, reference_input, reference)
    _install_folder(tmp, os.path.join(root, name), root, name, overwrite)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return os.path.join(root, name)
