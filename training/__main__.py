"""``python -m training ...`` (and ``torchrun ... -m training ...``) runs ``indexnet train``."""

from training.cli import train_app

if __name__ == "__main__":
    train_app(prog_name="python -m training")
