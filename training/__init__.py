"""IndexNet model, loss, augmentation and the DDP trainer (reads shards, never ``pipeline``).

Public API: none yet; the model and trainer arrive with their issues.
"""
