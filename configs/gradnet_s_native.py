"""`gradnet_s_native`: `gradnet_s_soft` fine-tuned on photographs at their own
scale and enlarged, as well as downscaled.

  python -m flax_gradnet.main --config=configs/gradnet_s_native.py --workdir=workdirs/gradnet_s_native

Why: the earlier models saw photographs only downscaled by 0.35-1 (area
averaging), i.e. crisper than any photograph at its own resolution, so "a
photograph as soft as a camera makes it" always meant "blurred" in training.
Every held-out loss of `gradnet_s_soft` is on the softest held-out photograph
(chelsea, fur), the one unlike its training crops. This recipe keeps the
architecture, loss and the v2.3 data (p_soft 0.5, p_unblurred 0.3) and draws
the photographs' scale from U(0.35, 1.3): about a quarter of the photo crops
are at their own scale or enlarged (bicubic, soft targets).
It starts from the shipped `gradnet_s_soft` (config.init_from) with a fresh
Adam and a cosine decay from 3e-4 over 5000 steps.
"""

from configs import gradnet_s_soft as base


def get_config():
  config = base.get_config()
  config.init_from = "gradnet_s_soft"  # fine-tune the shipped model (its generator only)
  config.dataset_options.photo_scale = (0.35, 1.3)  # photographs' scale: down, own and enlarged
  config.learning_rate = 3e-4  # lower than gradnet_s_soft's 5e-4: a second fine-tune
  config.num_train_steps = 5000
  return config
