"""`gradnet_s_jitter` (an experiment, not shipped): the shipped `gradnet_s_zoom`
fine-tuned with photometric jitter of the training photographs.

  python -m flax_gradnet.main --config=configs/gradnet_s_jitter.py --workdir=workdirs/gradnet_s_jitter

Why: on both held-out sets the weakest photograph is the one least like the ten
training photographs (chelsea, a soft-furred portrait), under every blur, seen
or unseen (docs/recipes.md). Half of the photograph crops get a random look
(`online.jitter_colours`: channels permuted, per-channel gains, gamma,
contrast), so the same ten photographs stand for more kinds of scene. It
starts from the shipped `gradnet_s_zoom` (config.init_from) with a fresh Adam
and a cosine decay from 1.5e-4 over 2400 steps; everything else as
`gradnet_s_zoom`, no adversarial term.
"""

from configs import gradnet_s_zoom as base


def get_config():
  config = base.get_config()
  config.init_from = "gradnet_s_zoom"  # fine-tune the shipped model (its generator only)
  config.dataset_options.photo_jitter = 0.5  # share of photograph crops given a random look
  config.learning_rate = 1.5e-4  # a fourth fine-tune: lower again
  config.num_train_steps = 2400
  config.eval_every_steps = 400
  return config
