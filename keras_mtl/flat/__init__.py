"""Flat regions: sharpness-aware minimisation for multi-task learning."""

from keras_mtl.flat.sam import SAM
