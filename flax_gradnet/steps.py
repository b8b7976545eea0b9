"""The pure, jit-able training step (Sec. 3.2 and 4.2), its state and models.

One generator step of the paper = `critic_steps` (5) WGAN-GP critic updates on
the batch, then one generator update with the Eq. (11) loss. The step is a pure
function `(state, batch, rng) -> (state, metrics)`; `train.py` runs it under
`jax.jit` over a device mesh (batch sharded on axis "data", state replicated),
where the global-batch means already average across devices. Under a named
mapped axis (e.g. `shard_map`) pass `axis_name` to average explicitly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state

from flax_gradnet import losses
from flax_gradnet.models import PatchCritic, generator_from_config
from flax_gradnet.models.generator import scale_targets


@flax.struct.dataclass
class GANState:
  """Both networks. `generator.step` counts generator updates (the paper's steps).

  `ema_params`: the exponential moving average of the generator's parameters
  (config.ema_decay > 0), updated after every generator update; None without.
  """

  generator: train_state.TrainState
  critic: train_state.TrainState
  ema_params: Any = None

  @property
  def step(self):
    return self.generator.step


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The static parts of a step, read from the ml_collections config."""

  critic_steps: int = 5
  gp_weight: float = 10.0
  content_weight: float = 10.0
  gradient_weight: float = 1.0
  adversarial_weight: float = 1.0
  critic_unroll: bool = True  # unroll the critic loop (faster on XLA CPU with lax convs)
  ema_decay: float = 0.0  # of the generator's weights' moving average (used when the state has one)
  # The losses read pred - G*(pred - blur) (losses.keep_low_frequencies); 0 = off.
  loss_low_freq_sigma: float = 0.0
  # Multi-scale content loss (coarse-to-fine generators, model.scales > 1): each
  # coarse pass's content loss against the sharp image at its scale, times this
  # and content_weight, is added (Nah et al. 2017, Tao et al. 2018); 0 = off.
  scale_loss_weight: float = 0.0

  @classmethod
  def from_config(cls, config) -> "StepConfig":
    return cls(critic_steps=config.critic_steps, gp_weight=config.gp_weight,
               content_weight=config.content_weight, gradient_weight=config.gradient_weight,
               adversarial_weight=config.adversarial_weight,
               critic_unroll=config.critic_unroll,
               ema_decay=float(config.get("ema_decay", 0.0)),
               loss_low_freq_sigma=float(config.get("loss_low_freq_sigma", 0.0)),
               scale_loss_weight=float(config.get("scale_loss_weight", 0.0)))


def ema_update(ema_params: Any, params: Any, decay: float) -> Any:
  """One step of the weights' moving average (BasicSR's `model_ema`):
  ema = decay * ema + (1 - decay) * params, leaf by leaf."""
  return optax.incremental_update(params, ema_params, step_size=1.0 - decay)


def _pmean(tree, axis_name):
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _tree_all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
  return jnp.all(jnp.stack(leaves))


def _critic_scores(critic_apply: Callable, params: Any, x: jax.Array) -> jax.Array:
  return losses.patch_scores(critic_apply({"params": params}, x))


def train_step(state: GANState, batch: dict[str, jax.Array], rng: jax.Array,
               content_fn: Callable, coarse_task: Any = None, *, generator_apply: Callable,
               critic_apply: Callable,
               cfg: StepConfig, adversarial: bool = True,
               axis_name: str | None = None,
               coarse_sharding: Any = None) -> tuple[GANState, dict[str, jax.Array]]:
  """One generator update preceded by `cfg.critic_steps` critic updates.

  Args:
    state: both networks' TrainStates.
    batch: {"blur", "sharp"}: float images in [-1, 1], [B, H, W, 3] per device.
      With "critic_blur", "critic_sharp" ([critic_steps, B, H, W, 3]; the
      config's `critic_batches="fresh"`), critic update k reads the k-th of
      them (its real images, and fakes made from its blurry ones), as WGAN-GP's
      Algorithm 1 draws new samples for each critic iteration; without them
      every critic update reads `batch` and one fake batch (DeblurGAN's trainer).
    rng: a key shared by all devices; folded with the step and, with
      `axis_name`, with the axis index so each shard draws its own
      interpolation factors.
    generator_apply, critic_apply: `module.apply`.
    content_fn: `(pred, target) -> scalar`, Eq. (8) or its stand-in. Pass it
      positionally as a `jax.tree_util.Partial` (as `make_content_fn` returns)
      so the VGG19 weights it holds are arguments of the compiled step rather
      than tens of MB of constants baked into it.
    coarse_task: None, or a `data.device_pairs.CoarseTask` (an argument, like
      `content_fn`: its photographs are leaves) for a generator with a coarse
      pass (`model.coarse_down`): the step draws a batch of its pairs on the
      device and adds `coarse_task.weight * alpha * L_content(G_coarse(blurry),
      sharp)` (term "coarse_task", unweighted), so the coarse pass learns at its
      own scale.
    cfg: loss weights and loop settings.
    adversarial: False skips the critic and the adversarial term (the
      content/gradient warm-up some trainers run before the GAN starts).
    axis_name: a named mapped axis (shard_map) over which gradients and metrics
      are averaged; None (default) under jit, where the batch is one global array.
    coarse_sharding: under jit over several devices, the sharding of the coarse
      task's pairs on their batch axis (e.g. `NamedSharding(mesh, P("data"))`):
      its pairs are drawn from the replicated key, and this constraint lets XLA
      split their drawing and the coarse net's work over the devices instead of
      repeating the whole batch on each. None: no constraint.

  Returns:
    The new state and a dict of scalar metrics (averaged over devices). A state
    with `ema_params` gets them moved towards the new generator parameters
    (`ema_update` with `cfg.ema_decay`).
  """
  rng = jax.random.fold_in(rng, state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  metrics = {}
  critic = state.critic
  gamma = 0.0
  if adversarial and cfg.adversarial_weight != 0:
    critic, critic_metrics = _critic_updates(state, batch, rng, generator_apply=generator_apply,
                                             critic_apply=critic_apply, cfg=cfg,
                                             axis_name=axis_name)
    metrics.update(critic_metrics)
    gamma = cfg.adversarial_weight

  loss_fn = functools.partial(_generator_loss, blur=batch["blur"], sharp=batch["sharp"],
                              critic_params=critic.params, content_fn=content_fn,
                              generator_apply=generator_apply, critic_apply=critic_apply,
                              cfg=cfg, gamma=gamma)
  if coarse_task is not None:
    loss_fn = functools.partial(_with_coarse_task, loss_fn, coarse_task=coarse_task,
                                key=jax.random.fold_in(rng, 2), content_fn=content_fn,
                                generator_apply=generator_apply, alpha=cfg.content_weight,
                                sharding=coarse_sharding)
  (g_loss, terms), g_grads = jax.value_and_grad(loss_fn, has_aux=True)(state.generator.params)
  g_grads = _pmean(g_grads, axis_name)
  generator = state.generator.apply_gradients(grads=g_grads)

  metrics.update({f"generator_{k}": v for k, v in terms.items()})
  metrics["generator_loss"] = g_loss
  metrics["generator_grad_norm"] = optax.tree.norm(g_grads)
  metrics["generator_param_norm"] = optax.tree.norm(generator.params)
  metrics["critic_param_norm"] = optax.tree.norm(critic.params)
  metrics = _pmean(metrics, axis_name)
  # 1.0 when every new parameter is finite; the loop refuses to checkpoint otherwise.
  metrics["params_finite"] = jnp.logical_and(
      _tree_all_finite(generator.params), _tree_all_finite(critic.params)).astype(jnp.float32)
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = ema_update(ema_params, generator.params, cfg.ema_decay)
  return GANState(generator=generator, critic=critic, ema_params=ema_params), metrics


# The parameter groups of a generator with a coarse pass of its own
# (`model.coarse_down`): its coarse net (params["coarse"]) and the rest.
COARSE_GROUP, REST_GROUP = "coarse", "rest"


def param_groups(params: Any) -> dict[str, str]:
  """{top-level name: COARSE_GROUP or REST_GROUP} of a generator's params."""
  return {k: COARSE_GROUP if k == "coarse" else REST_GROUP for k in params}


def grouped_adam(coarse_schedule: optax.Schedule, rest_schedule: optax.Schedule, *,
                 b1: float, b2: float) -> optax.GradientTransformation:
  """Two Adams (`optax.multi_transform`): one for the coarse net on
  `coarse_schedule`, one for the rest of the generator on `rest_schedule`, each
  with its own moments and step count. `coarse_warmup_step` advances only the
  first, so the rest starts its Adam (bias correction included) and its
  schedule fresh when the warm-up ends, as if the warm-up had not been."""
  return optax.multi_transform(
      {COARSE_GROUP: optax.adam(coarse_schedule, b1=b1, b2=b2),
       REST_GROUP: optax.adam(rest_schedule, b1=b1, b2=b2)}, param_groups)


def coarse_warmup_step(state: GANState, rng: jax.Array, content_fn: Callable,
                       coarse_task: Any, *, generator_apply: Callable, cfg: StepConfig,
                       coarse_sharding: Any = None) -> tuple[GANState, dict[str, jax.Array]]:
  """One update of the coarse net alone on its own task (not in the paper).

  The first `config.coarse_task.warmup_steps` steps of a run: the step draws
  `coarse_task`'s pairs on the device, with the same key as `train_step` would
  at this step (under its warm-up shakes, `config.coarse_task.warmup_extent`,
  where it has them), and updates only the coarse net (params["coarse"]) by
  `coarse_task.weight * alpha * L_content(G_coarse(blurry), sharp)`; no
  training batch is read, and the rest of the generator, its Adam moments and
  step count (a `grouped_adam` state) and the critic are left as they are. At
  a quarter of the cost of a full step on the 2-core CPU, the coarse net, which
  carries the strong blur, learns first; `train_step` then trains both.

  Args:
    state: both networks' TrainStates; the generator's optimizer a `grouped_adam`.
    rng, content_fn, coarse_task, generator_apply, cfg, coarse_sharding: as
      `train_step`'s (coarse_task not None).

  Returns:
    The new state (step + 1, EMA moved as in `train_step`) and its metrics:
    generator_coarse_task (unweighted), generator_loss and the norms.
  """
  if coarse_task is None:
    raise ValueError("coarse_warmup_step needs a coarse task (config.coarse_task.weight > 0).")
  old = state.generator
  inner = getattr(old.opt_state, "inner_states", None)
  if not isinstance(inner, dict) or set(inner) != {COARSE_GROUP, REST_GROUP}:
    raise ValueError("coarse_warmup_step needs the generator's optimizer to be steps.grouped_adam "
                     "(train.py builds it when config.coarse_task.warmup_steps > 0).")
  rng = jax.random.fold_in(rng, state.step)
  loss_fn = functools.partial(_with_coarse_task, lambda p: (jnp.zeros((), jnp.float32), {}),
                              coarse_task=coarse_task, key=jax.random.fold_in(rng, 2),
                              content_fn=content_fn, generator_apply=generator_apply,
                              alpha=cfg.content_weight, sharding=coarse_sharding, warmup=True)

  def coarse_loss(coarse_params):
    return loss_fn(dict(old.params, coarse=coarse_params))

  (g_loss, terms), coarse_grads = jax.value_and_grad(coarse_loss, has_aux=True)(
      old.params["coarse"])
  grads = dict(jax.tree_util.tree_map(jnp.zeros_like, old.params), coarse=coarse_grads)
  new = old.apply_gradients(grads=grads)
  # Hold the rest: its parameters, and its Adam's moments and count.
  opt_state = new.opt_state._replace(
      inner_states=dict(new.opt_state.inner_states, **{REST_GROUP: inner[REST_GROUP]}))
  generator = new.replace(params=dict(old.params, coarse=new.params["coarse"]),
                          opt_state=opt_state)
  metrics = {f"generator_{k}": v for k, v in terms.items()}
  metrics["generator_loss"] = g_loss
  metrics["generator_grad_norm"] = optax.tree.norm(coarse_grads)
  metrics["generator_param_norm"] = optax.tree.norm(generator.params)
  metrics["critic_param_norm"] = optax.tree.norm(state.critic.params)
  metrics["params_finite"] = _tree_all_finite(generator.params).astype(jnp.float32)
  ema_params = state.ema_params
  if ema_params is not None:
    ema_params = ema_update(ema_params, generator.params, cfg.ema_decay)
  return GANState(generator=generator, critic=state.critic, ema_params=ema_params), metrics


def _critic_updates(state: GANState, batch: dict[str, jax.Array], rng: jax.Array, *,
                    generator_apply: Callable, critic_apply: Callable, cfg: StepConfig,
                    axis_name: str | None) -> tuple[train_state.TrainState, dict[str, jax.Array]]:
  """The critic phase of `train_step`: `cfg.critic_steps` updates of the critic
  loss of Eq. (10) (WGAN-GP: Wasserstein estimate + lambda gradient penalty)
  against the generator of this step, in one `lax.scan`.

  Args:
    state, batch, generator_apply, critic_apply, cfg, axis_name: `train_step`'s.
    rng: `train_step`'s key, already folded with the step (and axis index).

  Returns:
    (the updated critic, the last update's metrics: critic_loss,
     gradient_penalty, wasserstein, critic_grad_norm; the critic the generator faces).
  """
  sharp = batch["sharp"]
  fresh = "critic_blur" in batch

  def make_fake(b):
    return jax.lax.stop_gradient(generator_apply({"params": state.generator.params}, b))

  if not fresh:  # one fake batch for all critic updates (as DeblurGAN's trainer)
    fake_once = make_fake(batch["blur"])

  def critic_loss_fn(params, key, sharp, fake):
    score_fn = functools.partial(_critic_scores, critic_apply, params)
    real_scores, fake_scores = score_fn(sharp), score_fn(fake)
    penalty = losses.gradient_penalty(score_fn, sharp, fake, key, weight=cfg.gp_weight)
    loss = losses.critic_loss(real_scores, fake_scores) + penalty
    return loss, {"critic_loss": loss, "gradient_penalty": penalty,
                  "wasserstein": losses.wasserstein_estimate(real_scores, fake_scores)}

  def critic_update(c_state, xs):
    key, critic_batch = xs
    if fresh:
      real, fake = critic_batch["sharp"], make_fake(critic_batch["blur"])
    else:
      real, fake = sharp, fake_once
    grads, aux = jax.grad(critic_loss_fn, has_aux=True)(c_state.params, key, real, fake)
    grads = _pmean(grads, axis_name)
    aux["critic_grad_norm"] = optax.tree.norm(grads)
    return c_state.apply_gradients(grads=grads), aux

  keys = jax.random.split(jax.random.fold_in(rng, 1), cfg.critic_steps)
  critic_batches = ({"blur": batch["critic_blur"], "sharp": batch["critic_sharp"]} if fresh
                    else None)
  if fresh and batch["critic_blur"].shape[0] != cfg.critic_steps:
    raise ValueError(f"batch['critic_blur'] holds {batch['critic_blur'].shape[0]} batches for "
                     f"{cfg.critic_steps} critic updates.")
  critic, critic_metrics = jax.lax.scan(critic_update, state.critic, (keys, critic_batches),
                                        unroll=cfg.critic_steps if cfg.critic_unroll else 1)
  # Report the last critic update's values (the critic the generator faces).
  return critic, jax.tree_util.tree_map(lambda x: x[-1], critic_metrics)


def _generator_loss(params: Any, *, blur: jax.Array, sharp: jax.Array, critic_params: Any,
                    content_fn: Callable, generator_apply: Callable, critic_apply: Callable,
                    cfg: StepConfig, gamma: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Eq. (11) of the generator `params` on `blur` against `sharp`: alpha
  L_content (Eq. 8) + beta L_gradient (Eq. 9) + gamma L_adv (the critic
  `critic_params` scores the output; skipped when gamma is 0). Returns
  (loss, its terms). With `cfg.loss_low_freq_sigma` > 0 the content and
  gradient terms read the output with the blurry input's low frequencies
  (`losses.keep_low_frequencies`); the critic still scores the output itself.

  With `cfg.scale_loss_weight` > 0 and a coarse-to-fine generator, each coarse
  pass k (1/2**k resolution) adds scale_loss_weight * alpha * L_content(its
  output, the sharp image at its scale), read through the low-frequency step
  of sigma / 2**k against the blurry image at its scale (the multi-scale loss
  of SRN and MIMO-UNet; not in the paper): the coarse passes, whose weights
  are the fine pass's, learn their task directly instead of through the
  fine pass alone. Reported as the term "scale_content" (the sum over the
  coarse passes, unweighted)."""
  multiscale = cfg.scale_loss_weight > 0
  outputs = generator_apply({"params": params}, blur, all_scales=True) if multiscale else None
  pred = outputs[-1] if multiscale else generator_apply({"params": params}, blur)
  fake_scores = _critic_scores(critic_apply, critic_params, pred) if gamma != 0 else None
  if cfg.loss_low_freq_sigma > 0:
    pred = losses.keep_low_frequencies(pred, blur, cfg.loss_low_freq_sigma)
  total, terms = losses.generator_loss(pred, sharp, fake_scores, content_fn=content_fn,
                                       alpha=cfg.content_weight, beta=cfg.gradient_weight,
                                       gamma=gamma)
  if multiscale:
    n = len(outputs)
    blurs, sharps = scale_targets(blur, n), scale_targets(sharp, n)
    coarse = jnp.zeros((), jnp.float32)
    for k, out in enumerate(outputs[:-1]):
      factor = 2 ** (n - 1 - k)
      if cfg.loss_low_freq_sigma > 0:
        out = losses.keep_low_frequencies(out, blurs[k], cfg.loss_low_freq_sigma / factor)
      coarse = coarse + jnp.asarray(content_fn(out, sharps[k]), jnp.float32)
    terms["scale_content"] = coarse
    total = total + cfg.scale_loss_weight * cfg.content_weight * coarse
  return total, terms


def _with_coarse_task(loss_fn: Callable, params: Any, *, coarse_task: Any, key: jax.Array,
                      content_fn: Callable, generator_apply: Callable,
                      alpha: float, sharding: Any = None,
                      warmup: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`loss_fn(params)` plus the coarse pass's own task: coarse_task.weight * alpha
  * content loss of the coarse net alone (`coarse_only=True`) on a batch of
  pairs drawn on the device at its scale (`CoarseTask.pairs(key, warmup=)`),
  constrained to `sharding` when given."""
  total, terms = loss_fn(params)
  blurry, sharp = coarse_task.pairs(key, warmup=warmup)
  if sharding is not None:
    blurry, sharp = jax.lax.with_sharding_constraint((blurry, sharp), sharding)
  out = generator_apply({"params": params}, blurry, coarse_only=True)
  term = jnp.asarray(content_fn(out, sharp), jnp.float32)
  terms = dict(terms, coarse_task=term)
  return total + coarse_task.weight * alpha * term, terms


def _vgg_content_loss(variables, pred, target, *, layer: str):
  from flax_gradnet import vgg  # pylint: disable=g-import-not-at-top
  return losses.content_loss(vgg.make_feature_fn(variables, layer=layer), pred, target)


def make_content_fn(config) -> jax.tree_util.Partial:
  """Eq. (8) with converted VGG19 weights, or a documented stand-in ("pixel"
  MSE, or "psnr": per-image log-MSE).

  Returns a `jax.tree_util.Partial`: a pytree whose leaves are the VGG19
  weights, so it can be an argument of the jitted step.
  """
  if config.content_loss == "pixel":
    return jax.tree_util.Partial(losses.pixel_content_loss)
  path = check_content_loss(config)
  if config.content_loss == "psnr":
    return jax.tree_util.Partial(losses.psnr_content_loss, floor=float(_psnr_floor(config)))
  from flax_gradnet import vgg  # pylint: disable=g-import-not-at-top

  variables = vgg.load_params(path)
  vgg.make_feature_fn(variables, layer=config.vgg_layer)  # validates the layer and weights
  fn = functools.partial(_vgg_content_loss, layer=config.vgg_layer)
  return jax.tree_util.Partial(fn, jax.tree_util.tree_map(jnp.asarray, variables))


def _psnr_floor(config) -> float:
  floor = config.get("psnr_loss_floor", losses.PSNR_LOSS_FLOOR)
  if not isinstance(floor, (int, float)) or not floor > 0:
    raise ValueError(f"config.psnr_loss_floor must be a number > 0, got {floor!r}")
  return floor


def check_content_loss(config) -> str | None:
  """Raises a one-line error if the content loss cannot be built; returns the
  VGG19 weights' path (None for the stand-ins). Reads nothing."""
  if config.content_loss == "psnr":
    _psnr_floor(config)
    return None
  if config.content_loss == "pixel":
    return None
  if config.content_loss != "vgg":
    raise ValueError("config.content_loss must be 'vgg', 'pixel' or 'psnr', got "
                     f"{config.content_loss!r}")
  channels = config.get("model", {}).get("channels", 3)
  if channels not in (1, 3):
    raise ValueError(f"config.model.channels={channels}: the VGG19 content loss takes RGB (3) or "
                     "grayscale (1, repeated to RGB) images; use --config.content_loss=pixel")
  path = os.path.expanduser(config.vgg_weights or "")
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(
        f"config.vgg_weights={config.vgg_weights!r}: the content loss of Eq. (8) needs ImageNet "
        "VGG19 weights, which flax_gradnet never downloads. Get torchvision's "
        "vgg19-dcbb9e9d.pth (or Keras' vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5) "
        "yourself, convert it with `python -m flax_gradnet.convert_vgg19 --input "
        "vgg19-dcbb9e9d.pth --output vgg19.npz`, and pass --config.vgg_weights=vgg19.npz "
        "(or use --config.content_loss=pixel for the documented stand-in).")
  return path


def build_models(config):
  generator = generator_from_config(config)
  critic = PatchCritic(features=config.critic_features, num_layers=config.critic_layers,
                       conv_impl=config.critic_conv_impl,
                       dtype=jnp.dtype(config.compute_dtype))
  return generator, critic


INIT_SCHEMES = ("lecun_normal", "torch", "normal_0.02")


def reinitialize(params: Any, scheme: str, rng: jax.Array) -> Any:
  """Redraws every kernel (and the bias beside it) of a parameter tree.

  "lecun_normal": flax's defaults, returned unchanged. "torch": PyTorch's
  Conv2d/Linear default (kaiming_uniform, a = sqrt(5)): kernel and bias
  ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = the product of all kernel
  dimensions but the last (for transposed convs PyTorch counts the output
  channels instead; here it is the input's, like a conv). "normal_0.02":
  pix2pix/DeblurGAN's N(0, 0.02) kernels and zero biases. Kernels that are all
  zero (a zero-initialised output conv) keep zero, and so does their bias;
  norm scales and biases are left as they are.
  """
  if scheme not in INIT_SCHEMES:
    raise ValueError(f"init_scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
  if scheme == "lecun_normal":
    return params
  # Drawn with numpy on the host (seeded from `rng`): one jax.random call per
  # kernel shape would compile a kernel each.
  gen = np.random.default_rng(np.asarray(jax.random.key_data(rng)
                                         if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
                                         else rng).astype(np.uint32).ravel().tolist())
  flat = traverse_util.flatten_dict(flax.core.unfreeze(jax.device_get(params)))
  out = dict(flat)
  for path, kernel in sorted(flat.items()):
    kernel = np.asarray(kernel)
    if path[-1] != "kernel" or not kernel.any():
      continue
    fan_in = int(np.prod(kernel.shape[:-1]))
    bias_path = path[:-1] + ("bias",)
    if scheme == "torch":
      bound = 1.0 / np.sqrt(fan_in)
      out[path] = gen.uniform(-bound, bound, kernel.shape).astype(kernel.dtype)
      if bias_path in flat:
        bias = np.asarray(flat[bias_path])
        out[bias_path] = gen.uniform(-bound, bound, bias.shape).astype(bias.dtype)
    else:
      out[path] = (0.02 * gen.standard_normal(kernel.shape)).astype(kernel.dtype)
      if bias_path in flat:
        out[bias_path] = np.zeros_like(np.asarray(flat[bias_path]))
  return jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(out))


def create_state(rng: jax.Array, generator, critic, *, image_size: int,
                 generator_tx: optax.GradientTransformation,
                 critic_tx: optax.GradientTransformation,
                 init_scheme: str = "lecun_normal") -> GANState:
  """Initialises both networks on a dummy `image_size` batch of the generator's
  `channels` (params float32), with the kernels of `init_scheme` (see `reinitialize`)."""
  g_rng, c_rng = jax.random.split(rng)
  x = jnp.zeros((1, image_size, image_size, getattr(generator, "channels", 3)), jnp.float32)
  # One compiled init per network: op-by-op init dispatches a kernel per parameter.
  g_params = jax.jit(generator.init)(g_rng, x)["params"]
  c_params = jax.jit(critic.init)(c_rng, x)["params"]
  g_params = reinitialize(g_params, init_scheme, jax.random.fold_in(g_rng, 1))
  c_params = reinitialize(c_params, init_scheme, jax.random.fold_in(c_rng, 1))
  return GANState(
      generator=train_state.TrainState.create(apply_fn=generator.apply, params=g_params,
                                              tx=generator_tx),
      critic=train_state.TrainState.create(apply_fn=critic.apply, params=c_params, tx=critic_tx))
