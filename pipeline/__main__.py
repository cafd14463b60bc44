"""``python -m pipeline ...`` runs the ``indexnet pipeline`` command group."""

from pipeline.cli import app

if __name__ == "__main__":
    app(prog_name="python -m pipeline")
