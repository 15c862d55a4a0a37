"""Optional integrations with training frameworks (each needs its framework installed):

- `fastckpt.integrations.lightning`: `FastckptCallback` / `FastckptCheckpointIO` for PyTorch Lightning
  (extra `fastckpt[lightning]`).
- `fastckpt.integrations.huggingface`: `FastckptTrainerCallback` for the Hugging Face Trainer
  (extra `fastckpt[huggingface]`).

Both protect every checkpoint they see saved and refuse to resume from a damaged one.
"""
