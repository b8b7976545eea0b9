"""flax_gradnet: "Structures Guided Dynamic Scene Deblurring" (Qi, 2022) in JAX/Flax."""

__version__ = "0.1.0"
